"""Candidate choice: service type, preference tiers, features, load and breaker order."""

from __future__ import annotations

import random

from inference_club.domain.endpoints import ServiceType
from inference_club.domain.providers import ModelDecl, ProviderState, ServiceDecl, ServiceInfo
from inference_club.domain.routing import candidates, order


def provider(
    pid: str,
    user: str,
    *,
    visibility: str = "private",
    model: str = "m",
    service_type: ServiceType = ServiceType.LLM,
    features: list[str] | None = None,
    max_concurrency: int = 4,
    last_seen: float = 1000.0,
) -> ProviderState:
    decl = ServiceDecl(
        type=service_type,
        max_concurrency=max_concurrency,
        models=[ModelDecl(id=model, features=features or [])],
    )
    return ProviderState(
        id=pid,
        user_id=user,
        name=pid,
        transport="direct",
        callback_url="http://x",
        visibility=visibility,
        agent_secret="s",
        services=[ServiceInfo.from_decl(0, decl)],
        last_seen=last_seen,
        created=0,
    )


PROVIDERS = [
    provider("own", "alice"),
    provider("shared", "bob", visibility="shared"),
    provider("private-bob", "bob"),
    provider("stale", "alice", last_seen=0.0),
    provider("tts", "alice", service_type=ServiceType.TTS),
]


def ids(preference: str, **kwargs: object) -> list[str]:
    found = candidates(
        PROVIDERS,
        user_id="alice",
        preference=preference,
        now=1010.0,
        online_window_s=60,
        service_type=kwargs.get("service_type", ServiceType.LLM),  # type: ignore[arg-type]
        model="m",
    )
    return [
        c.provider.id for c in order(found, load=lambda _: 0, is_open=lambda _: False, rng=random.Random(1))
    ]


def test_own_first_puts_own_before_shared() -> None:
    assert ids("own-first") == ["own", "shared"]


def test_own_excludes_shared() -> None:
    assert ids("own") == ["own"]


def test_any_mixes_in_one_tier() -> None:
    assert sorted(ids("any")) == ["own", "shared"]


def test_service_type_must_match() -> None:
    assert ids("own-first", service_type=ServiceType.TTS) == ["tts"]


def test_required_feature_filters() -> None:
    plain = provider("plain", "alice", service_type=ServiceType.TTS)
    cloning = provider("clone", "alice", service_type=ServiceType.TTS, features=["voice-cloning"])
    found = candidates(
        [plain, cloning],
        user_id="alice",
        preference="own",
        service_type=ServiceType.TTS,
        model="m",
        now=1000.0,
        online_window_s=60,
        required_feature="voice-cloning",
    )
    assert [c.provider.id for c in found] == ["clone"]


def test_least_loaded_relative_to_capacity_and_breaker_last() -> None:
    busy = provider("busy", "alice", max_concurrency=2)
    roomy = provider("roomy", "alice", max_concurrency=8)
    broken = provider("broken", "alice")
    found = candidates(
        [busy, roomy, broken],
        user_id="alice",
        preference="own",
        service_type=ServiceType.LLM,
        model="m",
        now=1000.0,
        online_window_s=60,
    )
    load = {("busy", 0): 1, ("roomy", 0): 2, ("broken", 0): 0}
    ordered = order(found, load=lambda k: load[k], is_open=lambda pid: pid == "broken")
    assert [c.provider.id for c in ordered] == ["roomy", "busy", "broken"]
