"""``/v1/workflows``: templates, runs of a gate-only spec (no provider needed), gates, events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

GATE_ONLY = {"spec": {"steps": [{"id": "review", "kind": "gate"}]}}


async def start(
    api: InProcessHub, key: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Any:
    return await api.http.post(
        "/v1/workflows/runs", json=body or GATE_ONLY, headers={**auth(key), **(headers or {})}
    )


async def awaiting_run(api: InProcessHub, key: str) -> str:
    answer = await start(api, key)
    assert answer.status_code == 202, answer.text
    run_id: str = answer.json()["id"]
    run = await api.http.get(f"/v1/workflows/runs/{run_id}", params={"wait": 10}, headers=auth(key))
    assert run.json()["status"] == "AWAITING"
    return run_id


def events_of(text: str) -> list[tuple[int, str]]:
    found = []
    for block in text.split("\n\n"):
        lines = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
        )
        if "id" in lines:
            found.append((int(lines["id"]), lines["event"]))
    return found


async def test_templates_list_and_one_template_by_key_or_404(api: InProcessHub) -> None:
    key = await api.new_key()
    listed = (await api.http.get("/v1/workflows/templates", headers=auth(key))).json()["data"]
    assert listed
    first = listed[0]["key"]
    detail = await api.http.get(f"/v1/workflows/templates/{first}", headers=auth(key))
    assert detail.status_code == 200 and detail.json()["key"] == first
    missing = await api.http.get("/v1/workflows/templates/no-such-template", headers=auth(key))
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "key"


async def test_a_run_is_202_with_its_location_and_a_replay_says_so(api: InProcessHub) -> None:
    key = await api.new_key()
    first = await start(api, key, headers={"idempotency-key": "run-once"})
    assert first.status_code == 202
    assert first.headers["location"] == f"/v1/workflows/runs/{first.json()['id']}"
    again = await start(api, key, headers={"idempotency-key": "run-once"})
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"template": "no-such-template"}, 404, "template"),
        ({"spec": {"steps": []}, "template": "x"}, 400, "template"),
        ({"spec": {"steps": [{"id": "review", "kind": "gate"}]}, "extra": 1}, 400, "extra"),
        ({"spec": {"steps": [{"id": "review", "kind": "gate"}]}, "inputs": ["topic"]}, 400, "inputs"),
        ({"spec": {"steps": [{"id": "review", "kind": "gate"}]}, "inputs": []}, 400, "inputs"),
        ({"spec": {"steps": [{"id": "review", "kind": "gate"}]}, "inputs": ""}, 400, "inputs"),
    ],
)
async def test_a_bad_run_request_names_its_field(
    api: InProcessHub, body: dict[str, Any], status: int, param: str
) -> None:
    key = await api.new_key()
    answer = await start(api, key, body)
    assert answer.status_code == status and answer.json()["error"]["param"] == param


async def test_a_spec_whose_step_nobody_serves_is_409_listing_what_is_missing(api: InProcessHub) -> None:
    key = await api.new_key()
    spec = {
        "spec": {"steps": [{"id": "draw", "kind": "inference", "type": "image", "body": {"prompt": "a fox"}}]}
    }
    answer = await start(api, key, spec)
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["type"] == "services_unavailable" and error["missing"]


async def test_someone_elses_run_does_not_exist_for_you(api: InProcessHub) -> None:
    owner = await api.new_key()
    run_id = await awaiting_run(api, owner)
    other = await api.new_key()
    for method, path in (
        ("GET", f"/v1/workflows/runs/{run_id}"),
        ("GET", f"/v1/workflows/runs/{run_id}/events"),
        ("POST", f"/v1/workflows/runs/{run_id}/cancel"),
        ("POST", f"/v1/workflows/runs/{run_id}/steps/review/approve"),
        ("POST", f"/v1/workflows/runs/{run_id}/steps/review/reject"),
        ("POST", f"/v1/workflows/runs/{run_id}/steps/review/rerun"),
    ):
        answer = await api.http.request(method, path, headers=auth(other))
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await api.http.get("/v1/workflows/runs", headers=auth(other))).json()["data"] == []


async def test_approve_takes_only_edit_and_the_edit_becomes_the_gates_output(api: InProcessHub) -> None:
    key = await api.new_key()
    run_id = await awaiting_run(api, key)
    approve = f"/v1/workflows/runs/{run_id}/steps/review/approve"
    unknown = await api.http.post(approve, json={"edit": 1, "comment": "x"}, headers=auth(key))
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "comment"
    done = await api.http.post(approve, json={"edit": {"chosen": 2}}, headers=auth(key))
    assert done.status_code == 200 and done.json()["status"] == "DONE"
    assert done.json()["context"]["steps"]["review"]["output"] == {"chosen": 2}
    again = await api.http.post(approve, headers=auth(key))
    assert again.status_code == 409


@pytest.mark.parametrize("reason", [7, "r" * 2001])
async def test_a_reject_reason_must_be_a_short_string(api: InProcessHub, reason: object) -> None:
    key = await api.new_key()
    # Checked before the run is looked up: an unknown run still answers 400.
    answer = await api.http.post(
        "/v1/workflows/runs/run_x/steps/review/reject", json={"reason": reason}, headers=auth(key)
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "reason"


async def test_reject_without_a_body_fails_the_run(api: InProcessHub) -> None:
    key = await api.new_key()
    run_id = await awaiting_run(api, key)
    answer = await api.http.post(f"/v1/workflows/runs/{run_id}/steps/review/reject", headers=auth(key))
    assert answer.status_code == 200 and answer.json()["status"] == "FAILED"


async def test_events_resume_after_last_event_id_and_refuse_a_non_number(api: InProcessHub) -> None:
    key = await api.new_key()
    run_id = await awaiting_run(api, key)
    await api.http.post(
        f"/v1/workflows/runs/{run_id}/cancel", headers=auth(key)
    )  # a final state ends the stream
    events = f"/v1/workflows/runs/{run_id}/events"
    everything = events_of((await api.http.get(events, headers=auth(key))).text)
    assert [seq for seq, _ in everything] == list(range(1, len(everything) + 1)) and len(everything) >= 3
    resumed = events_of((await api.http.get(events, headers={**auth(key), "last-event-id": " 2 "})).text)
    assert resumed == everything[2:]
    bad = await api.http.get(events, headers={**auth(key), "last-event-id": "two"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"


@pytest.mark.parametrize(
    ("params", "param"),
    [({"limit": "0"}, "limit"), ({"limit": "201"}, "limit"), ({"status": "SLEEPING"}, "status")],
)
async def test_run_list_parameters_are_checked(api: InProcessHub, params: dict[str, str], param: str) -> None:
    key = await api.new_key()
    answer = await api.http.get("/v1/workflows/runs", params=params, headers=auth(key))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


async def test_the_run_list_filters_by_status_and_pages(api: InProcessHub) -> None:
    key = await api.new_key()
    awaiting = await awaiting_run(api, key)
    await awaiting_run(api, key)
    page = (await api.http.get("/v1/workflows/runs", params={"limit": 1}, headers=auth(key))).json()
    assert page["has_more"] is True and len(page["data"]) == 1
    await api.http.post(f"/v1/workflows/runs/{awaiting}/cancel", headers=auth(key))
    canceled = (
        await api.http.get("/v1/workflows/runs", params={"status": "canceled"}, headers=auth(key))
    ).json()
    assert [r["id"] for r in canceled["data"]] == [awaiting]
