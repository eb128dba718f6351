"""Routing choice over a snapshot: which candidates, in which order. No I/O.

Tiers follow the user's preference (``own`` | ``own-first`` | ``any``); inside a tier
the least loaded service relative to its ``max_concurrency`` comes first.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from inference_club.domain.endpoints import ServiceType
from inference_club.domain.providers import ProviderState, ServiceInfo

SlotKey = tuple[str, int]  # (provider id, service index)


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: ProviderState
    service: ServiceInfo
    tier: int

    @property
    def slot_key(self) -> SlotKey:
        return (self.provider.id, self.service.index)


def candidates(
    providers: Iterable[ProviderState],
    *,
    user_id: str,
    preference: str,
    service_type: ServiceType,
    model: str,
    now: float,
    online_window_s: float,
    required_feature: str | None = None,
) -> list[Candidate]:
    """Every online service the user may use that serves ``model`` under ``service_type``."""
    found: list[Candidate] = []
    for provider in providers:
        if not provider.is_online(now, online_window_s):
            continue
        if not provider.usable_by(user_id, preference):
            continue
        tier = 1 if preference == "own-first" and provider.user_id != user_id else 0
        for service in provider.services:
            if service.type != service_type:
                continue
            info = service.models.get(model)
            if info is None:
                continue
            if required_feature and required_feature not in info.features:
                continue
            found.append(Candidate(provider, service, tier))
    return found


def order(
    found: list[Candidate],
    *,
    load: Callable[[SlotKey], int],
    is_open: Callable[[str], bool],
    rng: random.Random | None = None,
) -> list[Candidate]:
    """Tier first, then providers whose breaker is closed, then least relative load.

    A random tie-break spreads equal load instead of always picking the first provider.
    """
    rand = rng or random
    keyed = [
        (c.tier, is_open(c.provider.id), load(c.slot_key) / c.service.max_concurrency, rand.random(), c)
        for c in found
    ]
    keyed.sort(key=lambda item: item[:4])
    return [item[4] for item in keyed]
