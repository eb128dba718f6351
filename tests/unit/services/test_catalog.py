"""What a user sees of the providers, from the registry's snapshot and the capacity counters:
reachable models (with which are their own), and providers with live state and slots in use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.domain.providers import HeartbeatBody, ModelDecl, ServiceDecl
from inference_club.services.catalog import provider_public, providers_public, reachable_models
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


async def share(built: Built, user: str, name: str, *models: str, visibility: str = "shared") -> None:
    principal = await built.user(user)
    body = HeartbeatBody(
        name=name,
        callback_url="http://127.0.0.1:2",
        visibility=visibility,
        services=[ServiceDecl(type="llm", models=[ModelDecl(id=m) for m in models])],
    )
    await built.hub.registry.heartbeat(principal, body)


async def test_reachable_models_list_own_and_shared_and_tell_which_are_mine(built: Built) -> None:
    await share(built, "bob", "bobs", "chat", "bob-only")
    await share(built, "carol", "carols", "secret", visibility="private")
    registry, principal = built.hub.registry, built.principal
    models = {m["id"]: m for m in reachable_models(registry, principal, window_s=60, with_source=True)}
    assert set(models) == {"emb", "chat", "bob-only"}
    assert models["chat"]["owned_by"] == "rig" and models["chat"]["mine"] is True
    assert models["bob-only"]["mine"] is False and "engine" not in models["bob-only"]
    plain = reachable_models(registry, principal, window_s=60)
    assert all("mine" not in m for m in plain) and len(plain) == 3


async def test_a_provider_shows_its_live_state_and_slots_in_use(built: Built) -> None:
    rig = built.hub.registry.find(built.principal.user_id, "rig")
    assert rig is not None
    capacity = built.hub.capacity
    slot = (rig.id, rig.services[1].index)
    assert capacity.try_acquire([slot]) == slot
    rig.remote_tunnels = {"replica-b": 2}
    shown = provider_public(rig, capacity, window_s=60)
    assert (shown["id"], shown["name"], shown["owner"], shown["online"]) == (rig.id, "rig", rig.user_id, True)
    assert shown["tunnels"] == 2 and shown["last_seen"] == int(rig.last_seen)
    assert [(s["type"], s["in_use"], s["models"]) for s in shown["services"]] == [
        ("embedding", 0, ["emb"]),
        ("llm", 1, ["chat"]),
    ]
    later = provider_public(rig, capacity, window_s=60, now=rig.last_seen + 61)
    assert later["online"] is False


async def test_providers_are_listed_per_user_or_all_by_owner_and_name(built: Built) -> None:
    await share(built, "bob", "zeta", "m")
    await share(built, "carol", "alpha", "m")
    registry, capacity = built.hub.registry, built.hub.capacity
    mine = providers_public(registry, capacity, window_s=60, user_id=built.principal.user_id)
    assert [p["name"] for p in mine] == ["rig"]
    everyone = providers_public(registry, capacity, window_s=60, user_id=None)
    assert [(p["owner"], p["name"]) for p in everyone] == sorted((p["owner"], p["name"]) for p in everyone)
    assert {p["name"] for p in everyone} == {"rig", "zeta", "alpha"}
