"""The key watch on a real database: keys behind live tunnels and direct providers are read
again; a revoked key or a disabled user loses its tunnels (GOAWAY unauthorized), its direct
providers and its cached authentication; other replicas are told through announcers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.errors import AuthError
from inference_club.services.revocation import KeyWatch
from inference_club.tunnel.protocol import CloseCode
from tests.polling import eventually
from tests.unit.services.built_hub import Built, built_hub
from tests.unit.services.transports.tunnel_rig import FakeAgent


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


@pytest.fixture
async def tunnel(built: Built) -> AsyncIterator[FakeAgent]:
    agent = FakeAgent(built.hub.tunnels, built.principal)
    await agent.connect()
    yield agent
    await agent.close()


def rig_online(built: Built) -> bool:
    return any(p.name == "rig" for p in built.hub.registry.online())


async def test_live_keys_are_those_of_tunnels_and_online_direct_providers(
    built: Built, tunnel: FakeAgent
) -> None:
    bob = await built.user("bob")
    assert built.hub.key_watch.live_key_ids() == {built.principal.key_id}
    other = FakeAgent(built.hub.tunnels, bob, name="bobs")
    await other.connect()
    try:
        assert built.hub.key_watch.live_key_ids() == {built.principal.key_id, bob.key_id}
    finally:
        await other.close()


async def test_a_pass_with_every_key_valid_changes_nothing(built: Built, tunnel: FakeAgent) -> None:
    watch = built.hub.key_watch
    assert await watch.check() == []
    assert watch.checks == 1 and watch.revoked == 0 and rig_online(built)
    assert tunnel.hub_link.closed_with is None


async def test_a_revoked_key_loses_its_tunnels_providers_and_cache(built: Built, tunnel: FakeAgent) -> None:
    key = built.principal.key_id
    await built.hub.accounts.revoke_key(key)
    watch = built.hub.key_watch
    [revoked] = await watch.check()
    assert revoked.key_id == key and revoked.tunnels_closed == 1 and revoked.providers_offline == ["rig"]
    assert watch.revoked == 1 and not rig_online(built)
    assert tunnel.serving is not None
    await tunnel.serving
    assert (
        tunnel.hub_link.closed_with is not None and tunnel.hub_link.closed_with[0] == CloseCode.UNAUTHORIZED
    )
    assert "unauthorized" in tunnel.goaways()
    assert built.hub.key_watch.live_key_ids() == set()
    assert await watch.check() == []  # nothing live is left to check


async def test_a_disabled_user_is_cut_off_soon_after_the_change(built: Built, tunnel: FakeAgent) -> None:
    announced: list[tuple[str, str]] = []
    watch = built.hub.key_watch
    watch.on_announce(lambda subject, ident: announced.append((subject, ident)))
    await built.hub.accounts.set_disabled(built.principal.user_id, True)
    watch.user_changed(built.principal.user_id)
    assert announced == [("user", built.principal.user_id)]
    await eventually(lambda: watch.revoked == 1)
    assert not rig_online(built)
    assert tunnel.serving is not None
    await tunnel.serving
    assert "unauthorized" in tunnel.goaways()


async def test_revoking_here_announces_it_and_forgets_the_cached_key(built: Built, tunnel: FakeAgent) -> None:
    raw = (await built.hub.accounts.create_key("alice", name="second")).raw
    principal = await built.hub.auth.authenticate(f"Bearer {raw}")
    announced: list[tuple[str, str]] = []
    watch = built.hub.key_watch
    watch.on_announce(lambda subject, ident: announced.append((subject, ident)))
    await built.hub.accounts.revoke_key(principal.key_id)
    revoked = watch.key_revoked(principal.key_id)
    assert (revoked.tunnels_closed, revoked.providers_offline) == (0, [])  # nothing of it was live
    assert announced == [("key", principal.key_id)]
    assert watch.revoked == 0  # counted only when something was cut off
    with pytest.raises(AuthError):
        await built.hub.auth.authenticate(f"Bearer {raw}")  # read again, refused at once
    assert tunnel.hub_link.closed_with is None and rig_online(built)


async def test_the_loop_checks_on_its_own(built: Built, tunnel: FakeAgent) -> None:
    watch = KeyWatch(built.hub.auth, built.hub.registry, built.hub.tunnels, interval_s=0.01)
    watch.start()
    try:
        await built.hub.accounts.revoke_key(built.principal.key_id)
        await eventually(lambda: watch.revoked == 1)
        assert "running" in repr(watch)
    finally:
        await watch.stop()
    assert "idle" in repr(watch) and not rig_online(built)
