"""The batch service on a real database: all-or-nothing validation naming the bad item, the
size limit, status computed from the jobs, idempotent replays, owner-only reads and cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inference_club.domain.jobs import MAX_BATCH_ITEMS
from inference_club.errors import Conflict, InvalidRequest, NoProvider, NotFound, TooManyItems
from inference_club.store import jobs as q
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


def embed(text: str, endpoint: str = "/v1/embeddings", **body: Any) -> dict[str, Any]:
    return {"endpoint": endpoint, "body": {"model": "emb", "input": text, **body}}


async def create(built: Built, requests: list[Any], key: str | None = None, **data: Any) -> dict[str, Any]:
    batch, _ = await built.hub.batches.create(
        built.principal,
        {"requests": requests, **data},
        base_url="http://hub",
        request_id="req",
        idempotency_key=key,
    )
    return batch


async def job_count(built: Built) -> int:
    return len(await built.hub.jobs.list_jobs(built.principal.user_id, limit=500))


def test_a_full_batch_of_256_parses_and_one_more_is_refused(built: Built) -> None:
    label, items = built.hub.batches.parse(
        built.principal, {"label": "run", "requests": [embed(str(i)) for i in range(MAX_BATCH_ITEMS)]}
    )
    assert label == "run" and len(items) == MAX_BATCH_ITEMS
    with pytest.raises(TooManyItems) as caught:
        built.hub.batches.parse(built.principal, {"requests": [embed(str(i)) for i in range(257)]})
    assert caught.value.param == "requests" and "257" in caught.value.message


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({}, "requests"),
        ({"requests": {"a": 1}}, "requests"),
        ({"requests": []}, "requests"),
        ({"requests": [embed("a")], "label": 5}, "label"),
        ({"requests": [embed("a")], "label": "x" * 256}, "label"),
        ({"requests": [embed("a"), "text"]}, "requests[1]"),
        ({"requests": [{"body": {}}]}, "requests[0].endpoint"),
        ({"requests": [embed("a", endpoint="/v1/teleport")]}, "requests[0].endpoint"),
        ({"requests": [embed("a", endpoint="/v1/audio/transcriptions")]}, "requests[0].endpoint"),
        ({"requests": [{"endpoint": "/v1/embeddings", "body": "text"}]}, "requests[0].body"),
        (
            {"requests": [embed("a"), {"endpoint": "embeddings", "body": {"input": "x"}}]},
            "requests[1].body.model",
        ),
    ],
)
def test_a_bad_batch_names_the_field(built: Built, data: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        built.hub.batches.parse(built.principal, data)
    assert caught.value.param == param


def test_an_item_no_provider_serves_is_named(built: Built) -> None:
    data = {"requests": [embed("a"), {"endpoint": "embeddings", "body": {"model": "ghost", "input": "x"}}]}
    with pytest.raises(NoProvider) as caught:
        built.hub.batches.parse(built.principal, data)
    assert caught.value.param == "requests[1].body.model" and caught.value.message.startswith("requests[1]: ")


def test_endpoints_may_be_named_by_path_or_name_and_async_is_dropped(built: Built) -> None:
    _, items = built.hub.batches.parse(
        built.principal,
        {
            "requests": [
                embed("a"),
                embed("b", endpoint="embeddings", **{"async": True}),
                {
                    "url": "chat/completions",
                    "body": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                },
            ]
        },
    )
    assert [i.endpoint.name for i in items] == ["embeddings", "embeddings", "chat.completions"]
    assert items[1].body == {"model": "emb", "input": "b"} and items[2].model == "chat"


async def test_a_bad_item_creates_nothing(built: Built) -> None:
    with pytest.raises(InvalidRequest):
        await create(built, [embed("a"), {"endpoint": "/v1/embeddings", "body": []}])
    assert await job_count(built) == 0
    assert await built.hub.batches.list_batches(built.principal, limit=10, after=None) == []


async def test_a_batch_commits_one_queued_job_per_item(built: Built) -> None:
    batch = await create(built, [embed("a"), embed("b"), embed("c")], label="three")
    assert batch["object"] == "batch" and batch["label"] == "three"
    assert (batch["status"], batch["total"], batch["queued"]) == ("PENDING", 3, 3)
    detail = await built.hub.batches.get(built.principal, batch["id"])
    assert [j["status"] for j in detail["jobs"]] == ["QUEUED"] * 3
    assert {j["endpoint"] for j in detail["jobs"]} == {"/v1/embeddings"}
    async with built.hub.database.read() as session:
        jobs = await q.batch_jobs(session, batch_id=batch["id"])
    assert sorted(j.body["input"] for j in jobs) == ["a", "b", "c"]


async def test_the_status_and_counts_follow_the_jobs(built: Built) -> None:
    batch = await create(built, [embed("a"), embed("b"), embed("c")])
    ids = [j["id"] for j in (await built.hub.batches.get(built.principal, batch["id"]))["jobs"]]
    await built.finish(ids[0])
    await built.finish(ids[1], status="FAILED", error={"message": "no", "type": "upstream_error"})
    now = await built.hub.batches.get(built.principal, batch["id"], with_jobs=False)
    assert (now["status"], now["processed"], now["failed"], now["queued"]) == ("PROCESSING", 1, 1, 1)
    assert "jobs" not in now
    await built.finish(ids[2])
    done = await built.hub.batches.get(built.principal, batch["id"])
    assert done["status"] == "DONE" and done["processed"] == 2
    assert sorted(j["status"] for j in done["jobs"]) == ["FAILED", "PROCESSED", "PROCESSED"]
    listed = await built.hub.batches.list_batches(built.principal, limit=10, after=None)
    assert [(b["id"], b["status"]) for b in listed] == [(batch["id"], "DONE")]


async def test_cancel_ends_the_active_jobs_and_then_is_a_409(built: Built) -> None:
    batch = await create(built, [embed("a"), embed("b"), embed("c")])
    ids = [j["id"] for j in (await built.hub.batches.get(built.principal, batch["id"]))["jobs"]]
    await built.finish(ids[0])
    await built.claim(ids[1])
    canceled = await built.hub.batches.cancel(built.principal, batch["id"])
    assert (canceled["status"], canceled["processed"], canceled["canceled"]) == ("DONE", 1, 2)
    assert (await built.job(ids[0])).status == "PROCESSED"
    with pytest.raises(Conflict):
        await built.hub.batches.cancel(built.principal, batch["id"])


async def test_another_users_batch_is_not_found(built: Built) -> None:
    batch = await create(built, [embed("a")])
    bob = await built.user("bob")
    with pytest.raises(NotFound):
        await built.hub.batches.get(bob, batch["id"])
    with pytest.raises(NotFound):
        await built.hub.batches.cancel(bob, batch["id"])
    assert await built.hub.batches.list_batches(bob, limit=10, after=None) == []
    assert (await built.hub.batches.get(built.principal, batch["id"]))["queued"] == 1


async def test_an_idempotency_key_replays_the_batch_and_refuses_another_body(built: Built) -> None:
    first, replayed = await built.hub.batches.create(
        built.principal, {"requests": [embed("a")]}, base_url="b", request_id="r", idempotency_key="k"
    )
    again, replayed_again = await built.hub.batches.create(
        built.principal, {"requests": [embed("a")]}, base_url="b", request_id="r", idempotency_key="k"
    )
    assert (replayed, replayed_again) == (False, True) and again["id"] == first["id"]
    assert await job_count(built) == 1
    with pytest.raises(Conflict):
        await create(built, [embed("other")], key="k")
