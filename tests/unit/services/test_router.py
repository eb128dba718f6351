"""The router on a real hub: candidates, the default model, failover before the first byte,
capacity (busy for a request, no free slot for background work) and the breaker's record.

Agents are real (direct transport) in front of the fake engine; one agent is stopped to
make its provider unreachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.domain.endpoints import BY_NAME
from inference_club.errors import Busy, NoProvider
from inference_club.services.router import NoFreeSlot
from tests.unit.services.hub_rig import Rig, hub_rig

EMBEDDINGS = BY_NAME["embeddings"]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with hub_rig(tmp_path, queue_timeout_s=0.3, failover_attempts=2) as rig:
        yield rig


async def test_no_candidate_is_a_no_provider_naming_the_model(rig: Rig) -> None:
    assert rig.router.candidates(rig.principal, EMBEDDINGS, "fake-embed") == []
    assert rig.router.default_model(rig.principal, EMBEDDINGS) is None
    with pytest.raises(NoProvider) as refused:
        rig.router.require_candidates(rig.principal, EMBEDDINGS, "fake-embed")
    assert refused.value.param == "model"
    await rig.agent("rig-a", types=["embedding"])
    assert [c.provider.name for c in rig.router.candidates(rig.principal, EMBEDDINGS, "fake-embed")] == [
        "rig-a"
    ]
    assert rig.router.default_model(rig.principal, EMBEDDINGS) == "fake-embed"
    assert rig.router.candidates(rig.principal, EMBEDDINGS, "other-model") == []


async def test_an_unreachable_provider_is_skipped_and_counted_against_it(rig: Rig) -> None:
    await rig.agent("rig-a", types=["embedding"])
    dying, _state = await rig.agent("rig-b", types=["embedding"])
    await dying.stop()  # its listener is gone; the registry still lists it online
    dead = rig.provider_id("rig-b")
    # The dead provider first, as the routing order may put it when it looks idle.
    found = sorted(
        rig.router.candidates(rig.principal, EMBEDDINGS, "fake-embed"),
        key=lambda c: c.provider.name != "rig-b",
    )
    assert [c.provider.name for c in found] == ["rig-b", "rig-a"]
    for _ in range(3):  # breaker_failures
        assert not rig.router.breaker.is_open(dead)
        attempt = await rig.router.open(
            rig.principal, EMBEDDINGS, rig.request(EMBEDDINGS, "fake-embed"), found=found
        )
        try:
            assert attempt.provider.name == "rig-a" and attempt.response.status == 200
            assert b"embedding" in b"".join([c async for c in attempt.response.aiter_bytes()])
        finally:
            await attempt.close()
    assert rig.router.capacity.load(attempt.slot) == 0  # every slot went back
    assert rig.router.breaker.is_open(dead)
    # With its breaker open, the routing order puts it last.
    order = [c.provider.name for c in rig.router.candidates(rig.principal, EMBEDDINGS, "fake-embed")]
    assert order == ["rig-a", "rig-b"]


async def test_a_full_provider_answers_busy_or_no_free_slot(rig: Rig) -> None:
    await rig.agent("rig-a", types=["embedding"], max_concurrency=1)
    held = await rig.router.open(rig.principal, EMBEDDINGS, rig.request(EMBEDDINGS, "fake-embed"))
    try:
        with pytest.raises(NoFreeSlot):
            await rig.router.open(
                rig.principal, EMBEDDINGS, rig.request(EMBEDDINGS, "fake-embed"), background=True
            )
        with pytest.raises(Busy) as busy:
            await rig.router.open(rig.principal, EMBEDDINGS, rig.request(EMBEDDINGS, "fake-embed"))
        assert busy.value.headers == {"Retry-After": "1"}
    finally:
        await held.close()
    again = await rig.router.open(
        rig.principal, EMBEDDINGS, rig.request(EMBEDDINGS, "fake-embed"), background=True
    )
    await again.close()
    await again.close()  # closing twice frees the slot once
    assert rig.router.capacity.load(again.slot) == 0
