"""What a caller can reach: online providers they may use (own first), one ``/v1/models``
entry per model merging every provider and type, engine health on their own models, and
a no-provider message that says what to do."""

from __future__ import annotations

import time
from typing import Any

from inference_club.domain.endpoints import BY_NAME
from inference_club.domain.providers import ModelDecl, ProviderState, ServiceDecl, ServiceInfo
from inference_club.services.auth import Principal
from inference_club.services.model_catalog import model_entries, reachable_providers, why_no_provider

NOW = time.time()
ALICE = Principal("usr_alice", "alice", "key_a", False, "own-first")


def provider(
    name: str,
    *services: ServiceDecl,
    user_id: str = "usr_alice",
    visibility: str = "private",
    created: int = 100,
    last_seen: float = NOW,
    health: dict[str, Any] | None = None,
) -> ProviderState:
    return ProviderState(
        id=f"prov_{name}",
        user_id=user_id,
        name=name,
        transport="direct",
        callback_url="http://127.0.0.1:1",
        visibility=visibility,
        agent_secret="s",
        services=[ServiceInfo.from_decl(i, s) for i, s in enumerate(services)],
        last_seen=last_seen,
        created=created,
        health=health or {},
    )


def llm(*models: str, **model: Any) -> ServiceDecl:
    return ServiceDecl(type="llm", engine="llama", models=[ModelDecl(id=m, **model) for m in models])


def reachable(providers: list[ProviderState], principal: Principal = ALICE) -> list[str]:
    return [p.name for p in reachable_providers(providers, principal, now=NOW, online_window_s=60)]


def test_only_online_providers_the_caller_may_use_own_ones_first() -> None:
    providers = [
        provider("shared-old", llm("m"), user_id="usr_bob", visibility="shared", created=1),
        provider("mine-new", llm("m"), created=300),
        provider("mine-old", llm("m"), created=200),
        provider("bobs-private", llm("m"), user_id="usr_bob"),
        provider("mine-offline", llm("m"), last_seen=NOW - 61),
    ]
    assert reachable(providers) == ["mine-old", "mine-new", "shared-old"]
    own_only = Principal("usr_alice", "alice", "key_a", False, "own")
    assert reachable(providers, own_only) == ["mine-old", "mine-new"]


def test_one_entry_per_model_merging_types_modalities_and_features() -> None:
    providers = [
        provider("a", llm("m", context_length=None, features=["tools"])),
        provider(
            "b",
            llm("m", context_length=8192, features=["tools", "vision"], input_modalities=["text", "image"]),
            ServiceDecl(type="embedding", models=[ModelDecl(id="m"), ModelDecl(id="e")]),
            created=50,
        ),
    ]
    entries = {e["id"]: e for e in model_entries(providers)}
    assert set(entries) == {"m", "e"}
    merged = entries["m"]
    assert merged["owned_by"] == "a" and merged["created"] == 100 and merged["service_type"] == "llm"
    assert merged["service_types"] == ["llm", "embedding"]
    assert merged["supported_features"] == ["tools", "vision"]
    assert merged["input_modalities"] == ["text", "image"]
    assert merged["output_modalities"] == ["text", "embedding"]
    assert merged["context_length"] == 8192  # the first known length
    assert "engine" not in merged  # only the owner's entries tell engine health


def test_the_owners_entries_tell_the_engines_health() -> None:
    health = {"services": [{"index": 0, "reachable": False, "busy": True, "last_error": "x" * 400}]}
    [entry] = model_entries([provider("a", llm("m"), health=health)], owner_id="usr_alice")
    assert entry["engine"]["name"] == "llama" and entry["engine"]["reachable"] is False
    assert entry["engine"]["busy"] is True and len(entry["engine"]["last_error"]) == 300


def test_why_no_provider_points_to_the_right_endpoint() -> None:
    chat = BY_NAME["chat.completions"]
    embed_only = provider("e", ServiceDecl(type="embedding", models=[ModelDecl(id="m")]))
    message = why_no_provider([embed_only], chat, "m")
    assert message == "'m' is served as embedding, not llm; use its endpoint."


def test_why_no_provider_names_an_unreachable_engine() -> None:
    chat = BY_NAME["chat.completions"]
    down = {"services": [{"index": 0, "reachable": False}]}
    providers = [provider("box", llm("other"), health=down), provider("up", llm("other"))]
    message = why_no_provider(providers, chat, "m")
    assert message.startswith("No online provider serving model 'm' (llm) for this user.")
    assert "Provider 'box' is online but its llm server is unreachable." in message
    assert "'up'" not in message
    assert why_no_provider([], chat, "m") == "No online provider serving model 'm' (llm) for this user."


def test_why_no_provider_names_a_missing_feature() -> None:
    endpoint = next(e for e in BY_NAME.values() if e.required_feature)
    served = provider("v", ServiceDecl(type=endpoint.service_type.value, models=[ModelDecl(id="m")]))
    message = why_no_provider([served], endpoint, "m")
    assert f"with feature {endpoint.required_feature!r}" in message
