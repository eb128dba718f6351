"""``/v1/jobs``: queue with ``"async": true``, read, list, cancel, retry, summary and events.

The only provider listens nowhere, so every job fails on its one attempt: a terminal state
the tests can wait for with ``?wait=``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

MODEL = "job-model"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def hub_overrides() -> dict[str, object]:
    return {"job_max_attempts": 1, "connect_timeout_s": 1.0}


async def owner(api: InProcessHub) -> str:
    key = await api.new_key(routing="own")
    await api.heartbeat(key, "nowhere", {"llm": [MODEL]})
    return key


async def submit(api: InProcessHub, key: str, **headers: str) -> Any:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "async": True}
    return await api.http.post(CHAT, json=body, headers={**auth(key), **headers})


async def failed_job(api: InProcessHub, key: str) -> str:
    job_id: str = (await submit(api, key)).json()["id"]
    answer = await api.http.get(f"/v1/jobs/{job_id}", params={"wait": 20}, headers=auth(key))
    assert answer.json()["status"] == "FAILED", answer.text
    return job_id


async def test_async_true_answers_202_with_the_queued_envelope_and_its_location(api: InProcessHub) -> None:
    key = await owner(api)
    answer = await submit(api, key)
    assert answer.status_code == 202
    job = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["object"] == "inference.job" and job["status"] == "QUEUED"
    assert (job["endpoint"], job["model"]) == (CHAT, MODEL)


async def test_an_idempotency_key_replays_the_same_job(api: InProcessHub) -> None:
    key = await owner(api)
    first = await submit(api, key, **{"idempotency-key": "once"})
    again = await submit(api, key, **{"idempotency-key": "once"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers


async def test_a_job_for_a_model_nobody_serves_is_refused_before_queueing(api: InProcessHub) -> None:
    key = await api.new_key()
    answer = await api.http.post(
        CHAT,
        json={"model": "unserved", "messages": [{"role": "user", "content": "x"}], "async": True},
        headers=auth(key),
    )
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "no_provider"
    assert (await api.http.get("/v1/jobs", headers=auth(key))).json()["data"] == []


async def test_someone_elses_job_does_not_exist_for_you(api: InProcessHub) -> None:
    key = await owner(api)
    job_id = (await submit(api, key)).json()["id"]
    other = await api.new_key()
    for method, path in (
        ("GET", f"/v1/jobs/{job_id}"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("GET", "/v1/jobs/job_unknown"),
    ):
        answer = await api.http.request(method, path, headers=auth(other))
        assert answer.status_code == 404, (method, path)
        assert answer.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("params", "param"),
    [({"wait": "61"}, "wait"), ({"wait": "-1"}, "wait"), ({"wait": "soon"}, "wait")],
)
async def test_a_wait_out_of_range_is_400(api: InProcessHub, params: dict[str, str], param: str) -> None:
    key = await api.new_key()
    answer = await api.http.get("/v1/jobs/job_x", params=params, headers=auth(key))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": "0"}, "limit"), ({"limit": "201"}, "limit"), ({"active": "maybe"}, "active")],
)
async def test_list_parameters_out_of_range_are_400(
    api: InProcessHub, params: dict[str, str], param: str
) -> None:
    key = await api.new_key()
    answer = await api.http.get("/v1/jobs", params=params, headers=auth(key))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


async def test_a_failed_job_cannot_be_cancelled_but_can_be_retried(api: InProcessHub) -> None:
    key = await owner(api)
    job_id = await failed_job(api, key)
    cancel = await api.http.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))
    assert cancel.status_code == 409 and cancel.json()["error"]["type"] == "conflict"
    retry = await api.http.post(f"/v1/jobs/{job_id}/retry", headers=auth(key))
    assert retry.status_code == 202 and retry.json()["id"] == job_id
    assert retry.json()["status"] == "QUEUED" and retry.json()["attempts"] == 0


async def test_the_list_filters_by_status_in_any_case_and_pages(api: InProcessHub) -> None:
    key = await owner(api)
    failed = await failed_job(api, key)
    listed = (
        await api.http.get("/v1/jobs", params={"status": " failed ,canceled"}, headers=auth(key))
    ).json()
    assert [j["id"] for j in listed["data"]] == [failed]
    assert all(j["status"] == "FAILED" for j in listed["data"])
    await failed_job(api, key)
    page = (await api.http.get("/v1/jobs", params={"limit": 1}, headers=auth(key))).json()
    assert page["has_more"] is True and len(page["data"]) == 1


async def test_the_summary_is_your_own_unless_an_admin_asks_for_the_hub(api: InProcessHub) -> None:
    key = await owner(api)
    await failed_job(api, key)
    mine = (await api.http.get("/v1/jobs/summary", headers=auth(key))).json()
    asked_hub = (await api.http.get("/v1/jobs/summary", params={"scope": "hub"}, headers=auth(key))).json()
    assert mine["scope"] == asked_hub["scope"] == "user"
    assert mine["counts"]["FAILED"] == asked_hub["counts"]["FAILED"] == 1
    admin = await api.new_key("admin", admin=True)
    hub_wide = (await api.http.get("/v1/jobs/summary", params={"scope": "hub"}, headers=auth(admin))).json()
    assert hub_wide["scope"] == "hub" and hub_wide["counts"]["FAILED"] >= 1
    bad = await api.http.get("/v1/jobs/summary", params={"scope": "everyone"}, headers=auth(key))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "scope"


async def test_the_events_of_a_finished_job_are_one_status_event_then_the_end(api: InProcessHub) -> None:
    key = await owner(api)
    job_id = await failed_job(api, key)
    answer = await api.http.get(f"/v1/jobs/{job_id}/events", headers=auth(key))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache"
    events = [e for e in answer.text.split("\n\n") if e.strip() and not e.startswith(":")]
    assert len(events) == 1
    kind, data = events[0].split("\n")
    assert kind == "event: status"
    assert orjson.loads(data.removeprefix("data: "))["status"] == "FAILED"
