"""The hub's end of agent tunnels, with a real multiplexer on each side of an in-memory link:
the hello registers the provider and makes it routable for as long as a tunnel is held;
bad hellos are refused with the right close code; heartbeats, progress and drains arrive
over the tunnel; revoked keys and shutdown close tunnels with a GOAWAY."""

from __future__ import annotations

import orjson
import pytest

from inference_club.errors import AuthError
from inference_club.services.auth import Principal
from inference_club.services.transports.tunnel_server import TunnelServer
from inference_club.tunnel.protocol import (
    CloseCode,
    Flag,
    Frame,
    FrameType,
    GoAway,
    Hello,
    Progress,
    RequestHead,
    ResponseHead,
)
from tests.polling import eventually
from tests.unit.services.built_hub import Built
from tests.unit.services.transports.tunnel_rig import FakeAgent, heartbeat_body, read_body


def agent(
    built: Built, agents: list[FakeAgent], server: TunnelServer | None = None, **options: object
) -> FakeAgent:
    made = FakeAgent(server or built.hub.tunnels, built.principal, **options)  # type: ignore[arg-type]
    agents.append(made)
    return made


async def test_the_hello_registers_a_routable_provider_for_as_long_as_the_tunnel(
    built: Built, agents: list[FakeAgent]
) -> None:
    server = built.hub.tunnels
    holding: list[tuple[str, bool]] = []
    server.on_holding = lambda pid, holds: holding.append((pid, holds))
    tun = agent(built, agents)
    welcome = await tun.connect(version="1.2.3")
    provider = built.hub.registry.find(built.principal.user_id, "tun")
    assert (
        provider is not None and welcome.provider_id == provider.id and welcome.tunnel_id.startswith("tun_")
    )
    assert (provider.transport, provider.callback_url, provider.version) == ("tunnel", None, "1.2.3")
    assert welcome.window == server.window and welcome.heartbeat_interval_s == server.heartbeat_interval_s
    assert provider.tunnels == 1 and provider in built.hub.registry.online()
    [held] = server.tunnels(provider.id)
    assert (held.name, held.agent_version, held.key_id) == ("tun", "9.9", built.principal.key_id)
    assert server.held_provider_ids() == [provider.id] and server.key_ids() == {built.principal.key_id}
    assert holding == [(provider.id, True)] and server.stats().tunnels == 1

    assert tun.mux is not None
    tun.mux.close()
    assert tun.serving is not None
    await tun.serving
    assert provider.tunnels == 0 and provider not in built.hub.registry.online()
    assert server.tunnels() == [] and server.held_provider_ids() == []
    assert holding[-1] == (provider.id, False)
    assert held.closed.is_set()


@pytest.mark.parametrize("offered", [1, 2, 3])
async def test_the_hub_speaks_the_lower_version_and_batches_only_from_three(
    built: Built, agents: list[FakeAgent], offered: int
) -> None:
    tun = agent(built, agents, protocol=offered)
    welcome = await tun.connect()  # the rig reads the WELCOME as a lone frame
    assert welcome.protocol == offered
    [held] = built.hub.tunnels.tunnels()
    assert held.mux.protocol == offered and bool(held.mux.batch_size) == (offered >= 3)
    assert tun.mux is not None and tun.mux.protocol == offered
    streams = [held.mux.open_stream() for _ in range(8)]
    for i, stream in enumerate(streams):
        stream.send_head(RequestHead("embedding", "emb", "POST", "/v1/embeddings", {}).to_frame(stream.id))
        await stream.write(b"%d" % i * 1000)
        stream.end()
    for i, stream in enumerate(streams):
        assert ResponseHead.from_payload(await stream.head).status == 200
        assert await read_body(stream) == b"%d" % i * 1000


async def test_several_agents_with_one_name_share_the_provider(built: Built, agents: list[FakeAgent]) -> None:
    first, second = agent(built, agents), agent(built, agents)
    one = await first.connect()
    two = await second.connect()
    assert one.provider_id == two.provider_id and one.tunnel_id != two.tunnel_id
    provider = built.hub.registry.get(one.provider_id)
    assert provider is not None and provider.tunnels == 2
    assert first.mux is not None
    first.mux.close()
    await eventually(lambda: provider.tunnels == 1)
    assert provider in built.hub.registry.online()


@pytest.mark.parametrize(
    ("raw", "code", "close"),
    [
        (b"\x00garbage", "bad_hello", CloseCode.BAD_HELLO),
        (Hello(heartbeat={"name": "bad name!"}).to_frame().encode(), "bad_hello", CloseCode.BAD_HELLO),
        (
            Frame(FrameType.HELLO, 0, Flag.NONE, orjson.dumps({"protocol": 999, "heartbeat": {}})).encode(),
            "unsupported_version",
            CloseCode.UNSUPPORTED_VERSION,
        ),
        (Frame(FrameType.PING, 0, Flag.NONE, b"12345678").encode(), "bad_hello", CloseCode.BAD_HELLO),
    ],
)
async def test_a_bad_hello_is_refused_and_registers_nothing(
    built: Built, agents: list[FakeAgent], raw: bytes, code: str, close: int
) -> None:
    refused = agent(built, agents)
    await refused.say(raw)
    got, closed = await refused.refusal()
    assert got == code and closed is not None and closed[0] == close
    assert built.hub.tunnels.tunnels() == []
    assert [p.name for p in built.hub.registry.all()] == ["rig"]


async def test_an_agent_that_says_nothing_is_refused_after_the_hello_timeout(
    built: Built, agents: list[FakeAgent]
) -> None:
    server = TunnelServer(built.hub.registry, hello_timeout_s=0.05)
    silent = agent(built, agents, server)
    silent.start_serving()
    code, closed = await silent.refusal()
    assert code == "bad_hello" and closed is not None and closed[0] == CloseCode.BAD_HELLO


async def test_heartbeats_over_the_tunnel_update_the_provider_after_checking_the_key(
    built: Built, agents: list[FakeAgent]
) -> None:
    checked: list[int] = []

    async def reauthenticate() -> Principal:
        checked.append(1)
        return built.principal

    tun = agent(built, agents, reauthenticate=reauthenticate)
    welcome = await tun.connect()
    assert tun.mux is not None
    body = heartbeat_body("ignored-name", version="2.0", callback_url="http://10.0.0.1:1")
    tun.mux.send_control(Frame(FrameType.HEARTBEAT, 0, Flag.NONE, orjson.dumps(body)))

    def version() -> str | None:
        state = built.hub.registry.get(welcome.provider_id)
        return state.version if state is not None else None

    await eventually(lambda: version() == "2.0")
    current = built.hub.registry.get(welcome.provider_id)
    assert current is not None and current.name == "tun" and current.callback_url is None
    assert current.transport == "tunnel" and current.tunnels == 1 and checked == [1]


async def test_a_heartbeat_with_a_revoked_key_closes_the_tunnel(
    built: Built, agents: list[FakeAgent]
) -> None:
    async def revoked() -> Principal:
        raise AuthError()

    tun = agent(built, agents, reauthenticate=revoked)
    await tun.connect()
    assert tun.mux is not None
    tun.mux.send_control(Frame(FrameType.HEARTBEAT, 0, Flag.NONE, orjson.dumps(heartbeat_body("tun"))))
    assert tun.serving is not None
    await tun.serving
    assert tun.hub_link.closed_with is not None and tun.hub_link.closed_with[0] == CloseCode.UNAUTHORIZED
    assert "unauthorized" in tun.goaways()


async def test_progress_frames_reach_the_listener_with_the_user(
    built: Built, agents: list[FakeAgent]
) -> None:
    told: list[tuple[str, str, float, str]] = []
    built.hub.tunnels.on_progress = lambda *args: told.append(args)
    tun = agent(built, agents)
    await tun.connect()
    assert tun.mux is not None
    tun.mux.send_control(Progress("job_1.1", 0.25, "sampling").to_frame())
    await eventually(lambda: bool(told))
    assert told == [(built.principal.user_id, "job_1.1", 0.25, "sampling")]


async def test_a_draining_agent_stops_being_routable_at_once(built: Built, agents: list[FakeAgent]) -> None:
    tun = agent(built, agents)
    welcome = await tun.connect()
    provider = built.hub.registry.get(welcome.provider_id)
    assert provider is not None and tun.mux is not None
    tun.mux.send_control(GoAway("draining", "restarting").to_frame())
    await eventually(lambda: provider.tunnels == 0)
    assert built.hub.tunnels.held_provider_ids() == []
    assert not built.hub.tunnels.tunnels(provider.id)[0].routable


async def test_close_key_closes_only_that_keys_tunnels(built: Built, agents: list[FakeAgent]) -> None:
    bob = await built.user("bob")
    mine = agent(built, agents)
    theirs = FakeAgent(built.hub.tunnels, bob, name="bobs")
    agents.append(theirs)
    await mine.connect()
    await theirs.connect()
    assert built.hub.tunnels.key_ids() == {built.principal.key_id, bob.key_id}
    assert built.hub.tunnels.close_key(built.principal.key_id) == 1
    assert mine.serving is not None
    await mine.serving
    assert mine.hub_link.closed_with is not None and mine.hub_link.closed_with[0] == CloseCode.UNAUTHORIZED
    assert "unauthorized" in mine.goaways()
    assert built.hub.tunnels.key_ids() == {bob.key_id}
    assert built.hub.tunnels.close_key(built.principal.key_id) == 0


async def test_shutdown_tells_every_agent_and_closes(built: Built, agents: list[FakeAgent]) -> None:
    tun = agent(built, agents)
    await tun.connect()
    await built.hub.tunnels.aclose()
    assert tun.serving is not None and tun.serving.done()
    assert tun.hub_link.closed_with is not None and tun.hub_link.closed_with[0] == CloseCode.GOING_AWAY
    assert "hub_shutdown" in tun.goaways()
    assert built.hub.tunnels.tunnels() == []
