"""A revoked key loses its live tunnels and providers within the revocation window.

The attack: an agent's key is revoked (say it leaked) while its tunnel is open. Before
the key watch the tunnel was re-checked only on heartbeats (every 30 s), so it kept
serving long after. Now the hub checks the keys behind live tunnels every half key-cache
TTL, off the request path, and notices revocations made by another process through the
database.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from inference_club.agent.runner import AgentRunner
from inference_club.agent.tunnel import TunnelClient, tunnel_url
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.services.transports.tunnel_server import TunnelServer
from inference_club.testing.servers import ProcessHandle
from tests.conftest import RunningHub, make_settings, running_hub
from tests.e2e.conftest import CLI, start_agent, start_fake_engine, start_hub, write_agent_config
from tests.integration.conftest import engine_server, run_agent, services_for

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "still there?"}]}
_KEY_ID = re.compile(r"created key (key_\w+)")


def tunnels_of(hub: RunningHub) -> TunnelServer:
    transport = hub.hub.transports.by_name["tunnel"]
    assert isinstance(transport, TunnelTransport)
    return transport.server


def models(http: httpx.Client | httpx.Response) -> set[str]:
    response = http.get("/v1/models") if isinstance(http, httpx.Client) else http
    assert response.status_code == 200, response.text
    return {m["id"] for m in response.json()["data"]}


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


# --------------------------------------------------------------------------- in process


@pytest.fixture
async def watched_hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    """A hub on a real socket with a 1 s key cache (so a 0.5 s key watch)."""
    async with running_hub(make_settings(tmp_path / "data", key_cache_ttl_s=1.0)) as running:
        yield running


async def test_revoking_a_key_in_the_database_closes_its_tunnel_and_direct_provider(
    watched_hub: RunningHub,
) -> None:
    """The revocation is written straight to the database (as the CLI does from another
    process): nothing in the hub is told. ``key_cache_ttl_s`` is 1 s here."""
    agent_key = await watched_hub.new_user("alice")
    client_key = (await watched_hub.hub.accounts.create_key("alice", name="laptop")).raw
    [(agent_row, _)] = [
        kv for kv in await watched_hub.hub.accounts.list_keys("alice") if kv[0].name == "default"
    ]
    tunnels = tunnels_of(watched_hub)
    async with AsyncExitStack() as exits:
        _, url = await exits.enter_async_context(engine_server())
        tunnel_agent: AgentRunner = await exits.enter_async_context(
            run_agent(
                watched_hub.base_url,
                agent_key,
                "tunnel-rig",
                services_for(url, types=["llm"]),
                transport="tunnel",
            )
        )
        await exits.enter_async_context(
            run_agent(watched_hub.base_url, agent_key, "direct-rig", services_for(url, types=["embedding"]))
        )
        async with httpx.AsyncClient(
            base_url=watched_hub.base_url, timeout=10, headers={"Authorization": f"Bearer {client_key}"}
        ) as http:
            assert models(await http.get("/v1/models")) == {"fake-chat", "fake-embed"}
            assert (await http.post("/v1/chat/completions", json=CHAT)).status_code == 200
            assert tunnels.key_ids() == {agent_row.id}

            await watched_hub.hub.accounts.revoke_key(agent_row.id)
            revoked_at = time.monotonic()

            while models(await http.get("/v1/models")):
                assert time.monotonic() - revoked_at < 5 * watched_hub.settings.key_cache_ttl_s, (
                    "providers still online"
                )
                await asyncio.sleep(0.05)
            assert tunnels.tunnels() == []
            missing = await http.post("/v1/chat/completions", json=CHAT)
            assert missing.status_code == 404 and missing.json()["error"]["type"] == "no_provider"
            assert watched_hub.hub.key_watch.revoked == 1

            # The agent's reconnects with the revoked key are refused before the upgrade.
            client = tunnel_agent.transport
            assert isinstance(client, TunnelClient)
            await wait_until(
                lambda: client._last_failure == "refused", 10, "the agent's reconnect was not refused"
            )
            assert tunnels.tunnels() == [] and not models(await http.get("/v1/models"))
            # The revoked key itself answers 401 at once (its cache entry was dropped).
            refused = await http.get("/v1/models", headers={"Authorization": f"Bearer {agent_key}"})
            assert refused.status_code == 401


async def test_a_refused_tunnel_key_is_one_warning_line(
    watched_hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            tunnel_url(watched_hub.base_url), additional_headers={"Authorization": "Bearer ic_wrong"}
        ):
            pass
    assert refused.value.response.status_code == 401  # still denied before the upgrade
    await asyncio.sleep(0.2)  # the server logs after the route returned
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in warnings] == [
        ("WARNING", "tunnel refused from 127.0.0.1")
    ], [r.getMessage() for r in warnings]
    assert "ic_wrong" not in caplog.text


async def test_the_key_watch_costs_no_query_without_live_keys(watched_hub: RunningHub) -> None:
    assert watched_hub.hub.key_watch.live_key_ids() == set()
    assert await watched_hub.hub.key_watch.check() == []
    assert watched_hub.hub.key_watch.checks == 0


# --------------------------------------------------------------------------- real processes


@pytest.mark.e2e
@pytest.mark.slow
def test_keys_revoke_from_another_process_closes_a_live_tunnel(tmp_path: Path) -> None:
    """``inference-club keys revoke`` in its own process, a real agent's tunnel, the default
    5 s key cache: the tunnel closes and the provider goes offline within the window,
    the agent's reconnects are refused, and the hub logs warnings, not errors."""
    started: list[ProcessHandle] = []
    try:
        hub = start_hub(tmp_path, env={"IC_LOG_LEVEL": "info"})
        started.append(hub.handle)
        assert hub.key, hub.handle.log_text()
        engine, engine_url = start_fake_engine(tmp_path)
        started.append(engine)
        created = subprocess.run(
            [CLI, "keys", "create", "--user", "admin", "--name", "rig", "--data-dir", str(hub.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        rig_key = created.stdout.strip()
        match = _KEY_ID.search(created.stderr)
        assert match, created.stderr
        config = write_agent_config(
            tmp_path / "rig.toml",
            [
                {
                    "type": "llm",
                    "url": f"{engine_url}/v1",
                    "discover": False,
                    "models": [{"id": "fake-chat"}],
                },
            ],
        )
        agent = start_agent(tmp_path, hub.url, rig_key, "rig", config, transport="tunnel")
        started.append(agent)
        with httpx.Client(
            base_url=hub.url, headers={"Authorization": f"Bearer {hub.key}"}, timeout=10
        ) as http:
            deadline = time.monotonic() + 30
            while "fake-chat" not in models(http):
                assert time.monotonic() < deadline, agent.log_tail()
                time.sleep(0.1)
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200

            subprocess.run(
                [CLI, "keys", "revoke", match.group(1), "--data-dir", str(hub.data_dir)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            revoked_at = time.monotonic()
            while "fake-chat" in models(http):
                # The window is the key cache TTL (5 s); 2 s more for a loaded machine.
                assert time.monotonic() - revoked_at < 7.0, "the revoked key's provider is still online"
                time.sleep(0.1)
            answer = http.post("/v1/chat/completions", json=CHAT)
            assert answer.status_code == 404, answer.text

            deadline = time.monotonic() + 15
            while "refused the key (HTTP 401)" not in agent.log_text():
                assert time.monotonic() < deadline, agent.log_tail()
                time.sleep(0.1)
            assert "fake-chat" not in models(http)
            assert (
                httpx.get(f"{hub.url}/v1/models", headers={"Authorization": f"Bearer {rig_key}"}).status_code
                == 401
            )

        hub_log = hub.handle.log_text()
        assert "tunnel" in hub_log and "no longer valid" in hub_log, hub_log
        assert "refused" in hub_log, hub_log
        assert "Traceback" not in hub_log and " ERROR " not in hub_log, hub_log
        assert "without completing handshake" not in hub_log and "without sending handshake" not in hub_log
    finally:
        for handle in reversed(started):
            handle.stop(timeout=3)
