"""The provider registry on a real database: heartbeats create then update one provider per
user and name, the snapshot routing reads (online by heartbeat or by tunnel), listeners,
visibility, revoked keys' direct providers taken offline, and reloading after a restart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.domain.providers import HeartbeatBody, ModelDecl, ProviderState, ServiceDecl
from inference_club.errors import InvalidRequest
from inference_club.services.callback_policy import CallbackPolicy
from inference_club.services.registry import ProviderRegistry
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


def beat(name: str = "box", **extra: object) -> HeartbeatBody:
    values: dict[str, object] = {
        "name": name,
        "callback_url": "http://127.0.0.1:8081",
        "services": [ServiceDecl(type="llm", models=[ModelDecl(id="m1")])],
        **extra,
    }
    return HeartbeatBody.model_validate(values)


def fresh(built: Built) -> ProviderRegistry:
    """Another process's registry on the same database."""
    return ProviderRegistry(built.hub.database, built.hub.settings)


async def test_the_first_heartbeat_creates_and_the_next_updates_the_same_provider(built: Built) -> None:
    registry = built.hub.registry
    first = await registry.heartbeat(built.principal, beat(version="1", visibility="shared"))
    assert first.id.startswith("prov_") and len(first.agent_secret) >= 40
    assert (first.transport, first.callback_url, first.visibility, first.version) == (
        "direct",
        "http://127.0.0.1:8081",
        "shared",
        "1",
    )
    assert [s.models["m1"].output_modalities for s in first.services] == [("text",)]
    assert first.key_id == built.principal.key_id and first.is_online(time.time(), 60)
    second = await registry.heartbeat(
        built.principal,
        beat(version="2", services=[ServiceDecl(type="embedding", models=[ModelDecl(id="e")])]),
    )
    assert second.id == first.id and second.agent_secret == first.agent_secret
    assert second.version == "2" and second.visibility == "shared"  # unsaid visibility is kept
    assert [s.type.value for s in second.services] == ["embedding"]
    assert registry.get(first.id) is second and registry.find(built.principal.user_id, "box") is second


async def test_another_user_with_the_same_name_has_their_own_provider(built: Built) -> None:
    bob = await built.user("bob")
    mine = await built.hub.registry.heartbeat(built.principal, beat())
    theirs = await built.hub.registry.heartbeat(bob, beat())
    assert mine.id != theirs.id and theirs.user_id == bob.user_id and theirs.visibility == "private"
    assert built.hub.registry.find(bob.user_id, "box") is theirs


async def test_a_direct_provider_needs_an_allowed_callback_url(built: Built) -> None:
    registry = built.hub.registry
    with pytest.raises(InvalidRequest) as caught:
        await registry.heartbeat(built.principal, beat(callback_url=None))
    assert caught.value.param == "callback_url"
    with pytest.raises(InvalidRequest) as caught:
        await registry.heartbeat(built.principal, beat(callback_url="http://169.254.169.254/"))
    assert caught.value.param == "callback_url" and "blocked" in caught.value.message
    strict = ProviderRegistry(built.hub.database, built.hub.settings, CallbackPolicy(allow_private=False))
    with pytest.raises(InvalidRequest):
        await strict.heartbeat(built.principal, beat())
    assert registry.find(built.principal.user_id, "box") is None
    assert await registry.check_callback_url("HTTP://127.0.0.1:8081/a/") == "http://127.0.0.1:8081/a"


async def test_a_tunnel_provider_is_online_only_while_it_holds_a_tunnel(built: Built) -> None:
    registry = built.hub.registry
    state = await registry.heartbeat(built.principal, beat("tun", transport="tunnel", callback_url=None))
    assert state.callback_url is None and state not in registry.online()
    state.tunnels = 1
    assert state in registry.online()
    again = await registry.heartbeat(built.principal, beat("tun", transport="tunnel", callback_url=None))
    assert again.tunnels == 1  # a heartbeat keeps the live tunnel count


async def test_a_direct_provider_goes_offline_after_the_window(built: Built) -> None:
    state = await built.hub.registry.heartbeat(built.principal, beat())
    assert state in built.hub.registry.online()
    state.last_seen = time.time() - built.hub.settings.online_window_s - 1
    assert state not in built.hub.registry.online()


async def test_listeners_hear_of_changes(built: Built) -> None:
    registry = built.hub.registry
    changed: list[str] = []
    local: list[str] = []
    registry.on_change(lambda s: changed.append(s.name))
    registry.on_local_update(lambda s: local.append(s.name))
    state = await registry.heartbeat(built.principal, beat())
    assert changed == ["box"] and local == ["box"]
    registry.changed(state)  # learnt from another replica: not a local update
    assert changed == ["box", "box"] and local == ["box"]


async def test_visibility_is_kept_across_a_restart(built: Built) -> None:
    state = await built.hub.registry.heartbeat(built.principal, beat())
    await built.hub.registry.set_visibility(state.id, "shared")
    assert state.visibility == "shared"
    restarted = fresh(built)
    await restarted.load()
    loaded = restarted.find(built.principal.user_id, "box")
    assert loaded is not None and loaded.visibility == "shared" and loaded.agent_secret == state.agent_secret
    assert [s.models["m1"].id for s in loaded.services] == ["m1"]
    assert {p.name for p in restarted.all()} == {"rig", "box"}


async def test_a_provider_registered_elsewhere_is_adopted(built: Built) -> None:
    elsewhere = fresh(built)
    state = await elsewhere.heartbeat(built.principal, beat("remote"))
    assert built.hub.registry.get(state.id) is None
    adopted = await built.hub.registry.adopt(state.id)
    assert adopted is not None and adopted.name == "remote" and adopted.agent_secret == state.agent_secret
    assert await built.hub.registry.adopt(state.id) is adopted
    assert await built.hub.registry.adopt("prov_unknown") is None


async def test_a_revoked_keys_direct_providers_are_taken_offline(built: Built) -> None:
    registry = built.hub.registry
    direct = await registry.heartbeat(built.principal, beat())
    tunnel = await registry.heartbeat(built.principal, beat("tun", transport="tunnel", callback_url=None))
    tunnel.tunnels = 1
    bob = await built.user("bob")
    bobs = await registry.heartbeat(bob, beat())
    seen: list[ProviderState] = []
    registry.on_change(seen.append)
    dropped = registry.take_offline(built.principal.key_id)
    assert {p.name for p in dropped} == {"box", "rig"}
    assert direct not in registry.online() and tunnel in registry.online() and bobs in registry.online()
    assert {p.name for p in seen} == {"box", "rig"}
    assert registry.take_offline(built.principal.key_id) == []  # already offline
