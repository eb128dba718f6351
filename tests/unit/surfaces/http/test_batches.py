"""``/v1/batches``: 202 with the batch, replays, ownership, list bounds, cancel of a finished batch.

The only provider listens nowhere, so every job fails on its one attempt.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

MODEL = "batch-model"


@pytest.fixture(scope="module")
def hub_overrides() -> dict[str, object]:
    return {"job_max_attempts": 1, "connect_timeout_s": 1.0}


def chat(text: str) -> dict[str, Any]:
    return {
        "endpoint": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": text}]},
    }


async def owner(api: InProcessHub) -> str:
    key = await api.new_key(routing="own")
    await api.heartbeat(key, "nowhere", {"llm": [MODEL]})
    return key


async def create(api: InProcessHub, key: str, body: dict[str, Any], **headers: str) -> Any:
    return await api.http.post("/v1/batches", json=body, headers={**auth(key), **headers})


async def test_a_batch_is_202_with_its_location_and_counts(api: InProcessHub) -> None:
    key = await owner(api)
    answer = await create(api, key, {"label": "two", "requests": [chat("a"), chat("b")]})
    assert answer.status_code == 202
    batch = answer.json()
    assert answer.headers["location"] == f"/v1/batches/{batch['id']}"
    assert batch["label"] == "two" and batch["total"] == 2
    got = await api.http.get(f"/v1/batches/{batch['id']}", headers=auth(key))
    assert got.status_code == 200 and len(got.json()["jobs"]) == 2


async def test_an_idempotency_key_replays_the_same_batch(api: InProcessHub) -> None:
    key = await owner(api)
    first = await create(api, key, {"requests": [chat("a")]}, **{"idempotency-key": "batch-once"})
    again = await create(api, key, {"requests": [chat("a")]}, **{"idempotency-key": "batch-once"})
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "requests"),
        ({"requests": []}, "requests"),
        ({"requests": [chat("a")] * 257}, "requests"),
        ({"requests": [chat("a"), {"endpoint": "/v1/nope", "body": {}}]}, "requests[1].endpoint"),
    ],
)
async def test_a_bad_batch_is_400_naming_the_field_and_queues_nothing(
    api: InProcessHub, body: dict[str, Any], param: str
) -> None:
    key = await owner(api)
    answer = await create(api, key, body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param
    assert (await api.http.get("/v1/batches", headers=auth(key))).json()["data"] == []


async def test_a_body_that_is_not_json_is_400_with_detail(api: InProcessHub) -> None:
    key = await api.new_key()
    answer = await api.http.post(
        "/v1/batches", content=b"{nope", headers={**auth(key), "content-type": "application/json"}
    )
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["detail"]


async def test_someone_elses_batch_does_not_exist_for_you(api: InProcessHub) -> None:
    key = await owner(api)
    batch_id = (await create(api, key, {"requests": [chat("a")]})).json()["id"]
    other = await api.new_key()
    for method, path in (("GET", f"/v1/batches/{batch_id}"), ("POST", f"/v1/batches/{batch_id}/cancel")):
        answer = await api.http.request(method, path, headers=auth(other))
        assert answer.status_code == 404, (method, path)
    assert (await api.http.get("/v1/batches", headers=auth(other))).json()["data"] == []


@pytest.mark.parametrize("limit", ["0", "201", "x"])
async def test_a_list_limit_out_of_range_is_400(api: InProcessHub, limit: str) -> None:
    key = await api.new_key()
    answer = await api.http.get("/v1/batches", params={"limit": limit}, headers=auth(key))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "limit"


async def test_the_list_pages_and_a_finished_batch_cannot_be_cancelled(api: InProcessHub) -> None:
    key = await owner(api)
    first = (await create(api, key, {"requests": [chat("a")]})).json()
    await create(api, key, {"requests": [chat("b")]})
    page = (await api.http.get("/v1/batches", params={"limit": 1}, headers=auth(key))).json()
    assert page["has_more"] is True and len(page["data"]) == 1
    [job] = (await api.http.get(f"/v1/batches/{first['id']}", headers=auth(key))).json()["jobs"]
    ended = await api.http.get(f"/v1/jobs/{job['id']}", params={"wait": 20}, headers=auth(key))
    assert ended.json()["status"] == "FAILED"
    refused = await api.http.post(f"/v1/batches/{first['id']}/cancel", headers=auth(key))
    assert refused.status_code == 409 and refused.json()["error"]["type"] == "conflict"
