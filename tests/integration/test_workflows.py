"""Workflows through hub → agent (direct) → fake engine: templates end to end, the engine's
semantics (empty maps, gates, reject, cancel, rerun, fan-out), events, and bad input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from inference_club.settings import Settings
from tests.conftest import RunningHub, _truncate_all, make_settings, running_hub
from tests.integration.conftest import Stack, engine_server, run_agent, services_for

STORY = {
    "title": "Cat at sea",
    "scenes": [
        {"narration": "The cat wakes.", "image_prompt": "a cat in a lighthouse"},
        {"narration": "The cat sails.", "image_prompt": "a cat in a boat"},
    ],
}
REPLIES = [
    ["illustrated story", orjson.dumps(STORY).decode()],
    ["image prompts for", '{"prompts": ["fox at dawn", "fox at dusk"]}'],
    [
        "shots for this film",
        '{"shots": [{"image_prompt": "a paper boat", "motion": "it drifts"}, '
        '{"image_prompt": "a drain", "motion": "water swirls"}]}',
    ],
    ["song about", '{"music_prompt": "slow synths", "lyrics": "la la", "cover_prompt": "a train at night"}'],
    [
        "short spoken lines",
        'Here you go:\n```json\n{"lines": ["Light scatters.", "Blue scatters most."]}\n```',
    ],
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path / "data",
        job_poll_interval_s=0.2,
        job_retry_base_s=0.05,
        job_retry_max_s=0.2,
        job_lease_s=3.0,
        workflow_sweep_interval_s=1.0,
    )


@asynccontextmanager
async def wf_stack(
    hub: RunningHub, *, max_concurrency: int = 4, types: list[str] | None = None, user: str = "alice"
) -> AsyncIterator[Stack]:
    key = await hub.new_user(user)
    async with AsyncExitStack() as exits:
        state, url = await exits.enter_async_context(engine_server())
        state.settings.replies = [list(pair) for pair in REPLIES]
        state.settings.media_size_bytes = 2048
        agent = await exits.enter_async_context(
            run_agent(
                hub.base_url, key, "rig", services_for(url, max_concurrency=max_concurrency, types=types)
            )
        )
        yield Stack(hub=hub, key=key, engine=state, engine_url=url, agents=[agent])


@pytest.fixture
async def stack(hub: RunningHub) -> AsyncIterator[Stack]:
    async with wf_stack(hub) as running:
        yield running


async def create(
    http: httpx.AsyncClient, body: dict[str, Any], status: int = 202, **headers: str
) -> dict[str, Any]:
    answer = await http.post("/v1/workflows/runs", json=body, headers=headers)
    assert answer.status_code == status, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def wait_run(http: httpx.AsyncClient, run_id: str, wait: float = 30) -> dict[str, Any]:
    answer = await http.get(f"/v1/workflows/runs/{run_id}", params={"wait": wait})
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in run["steps"] if s["id"] == step_id)
    return found


def llm(step_id: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "kind": "inference",
        "type": "llm",
        "body": {"prompt": prompt, **extra.pop("body", {})},
        **extra,
    }


async def run_to_end(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """Wait, approving every gate that waits, until the run ends."""
    for _ in range(10):
        run = await wait_run(http, run_id)
        if run["status"] != "AWAITING":
            return run
        for gate in [s for s in run["steps"] if s["status"] == "AWAITING"]:
            answer = await http.post(f"/v1/workflows/runs/{run_id}/steps/{gate['id']}/approve")
            assert answer.status_code == 200, answer.text
    raise AssertionError("the run kept waiting")


# --------------------------------------------------------------------------- templates


async def test_templates_are_listed_with_their_forms(stack: Stack) -> None:
    async with stack.http() as http:
        listed = (await http.get("/v1/workflows/templates")).json()["data"]
        keys = {t["key"] for t in listed}
        assert {
            "illustrated-story",
            "image-variations",
            "storyboard-to-video",
            "song-and-cover",
            "narrated-explainer",
        } <= keys
        for template in listed:
            assert set(template) == {"key", "title", "description", "inputs", "step_count"}
            assert template["description"] and template["step_count"] >= 2
            assert all({"name", "label", "type"} <= set(f) for f in template["inputs"])
        detail = (await http.get("/v1/workflows/templates/illustrated-story/")).json()
        assert [s["id"] for s in detail["spec"]["steps"]] == [
            "outline",
            "illustrations",
            "review",
            "narration",
        ]
        assert {"from": "illustrations", "to": "review"} in detail["edges"]
        missing = await http.get("/v1/workflows/templates/nope")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"


TEMPLATE_RUNS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "illustrated-story": (
        {"topic": "a cat", "scenes": 2},
        {"illustrations": "image/png", "narration": "audio/wav"},
    ),
    "image-variations": ({"subject": "a fox", "count": 2}, {"images": "image/png"}),
    "storyboard-to-video": (
        {"concept": "a paper boat", "shots": 2, "size": 256},
        {"frames": "image/png", "clips": "video/mp4"},
    ),
    "song-and-cover": ({"theme": "night trains"}, {"cover": "image/png"}),
    "narrated-explainer": ({"topic": "blue skies", "lines": 2}, {"narration": "audio/wav"}),
}


@pytest.mark.parametrize("key", sorted(TEMPLATE_RUNS))
async def test_every_template_runs_to_done(hub: RunningHub, key: str) -> None:
    inputs, media = TEMPLATE_RUNS[key]
    async with wf_stack(hub) as stack, stack.http() as http:
        created = await create(http, {"template": key, "inputs": inputs})
        assert (
            created["template"] == key
            and created["inputs"]["topic" if "topic" in inputs else next(iter(inputs))] is not None
        )
        run = await run_to_end(http, created["id"])
        assert run["status"] == "DONE", run
        assert all(s["status"] == "DONE" for s in run["steps"]), [
            (s["id"], s["status"], s["error"]) for s in run["steps"]
        ]
        for step_id, content_type in media.items():
            outputs = step(run, step_id)["output"]
            for output in outputs if isinstance(outputs, list) else [outputs]:
                assert set(output) == {"file_id", "url", "content_type"}
                assert output["content_type"].startswith(content_type.split("/")[0])
        # Every file produced is listed on the run and downloadable by its owner only.
        assert run["files"] and {f["step_id"] for f in run["files"]} >= set(media)
        bob = await stack.hub.new_user(f"bob-{key}")
        async with stack.http(bob) as other:
            for item in run["files"]:
                own = await http.get(f"/v1/files/{item['id']}/content")
                assert own.status_code == 200 and own.content
                assert (await other.get(f"/v1/files/{item['id']}/content")).status_code == 404
            assert (await other.get(f"/v1/workflows/runs/{run['id']}")).status_code == 404
        if key == "illustrated-story":
            outline = step(run, "outline")["output"]
            assert outline["title"] == "Cat at sea" and len(outline["scenes"]) == 2
            assert len(step(run, "illustrations")["output"]) == 2
            review = step(run, "review")["output"]
            assert set(review) == {"outline", "illustrations"}  # both dependencies, by step id
            sent = stack.engine.stats.prompts
            assert sent["The cat wakes."] == 1 and sent["The cat sails."] == 1
            assert sent["a cat in a lighthouse, soft watercolor, warm light"] == 1
        if key == "narrated-explainer":
            assert step(run, "transcript")["output"] == "Light scatters.\nBlue scatters most."
        if key == "storyboard-to-video":
            pairs = step(run, "shots_with_frames")["output"]
            assert pairs[0][0]["motion"] == "it drifts" and pairs[0][1]["content_type"] == "image/png"
            assert stack.engine.stats.prompts["a paper boat. it drifts"] == 1
            assert stack.engine.stats.image_inputs == 2  # each clip got its approved frame as the first frame


# --------------------------------------------------------------------------- engine semantics


async def test_empty_map_is_done_with_an_empty_list_and_the_run_continues(stack: Stack) -> None:
    spec = {
        "steps": [
            {
                "id": "pics",
                "kind": "map",
                "type": "image",
                "over": "{{inputs.things}}",
                "body": {"prompt": "{{item}}"},
            },
            {"id": "after", "kind": "transform", "op": "passthrough", "input": "{{steps.pics.output}}"},
        ]
    }
    async with stack.http() as http:
        run = await wait_run(http, (await create(http, {"spec": spec, "inputs": {"things": []}}))["id"])
        assert run["status"] == "DONE"
        assert step(run, "pics")["output"] == [] and step(run, "after")["output"] == []


async def test_a_prompt_mentioning_steps_creates_no_dependency(stack: Stack) -> None:
    spec = {
        "steps": [
            llm("first", "say one"),
            {
                "id": "second",
                "kind": "inference",
                "endpoint": "/v1/completions",
                "body": {"prompt": "mention steps.first.output here"},
            },
        ]
    }
    async with stack.http() as http:
        run = await create(http, {"spec": spec})
        assert run["edges"] == []
        assert all(s["depends_on"] == [] for s in run["steps"])
        done = await wait_run(http, run["id"])
        assert done["status"] == "DONE"
        assert step(done, "second")["output"]["text"] == "mention steps.first.output here"
        assert step(done, "second")["endpoint"] == "/v1/completions"
        assert stack.engine.stats.requests["/v1/completions"] == 1


async def test_gate_output_carries_every_dependency_and_an_edit_replaces_it(stack: Stack) -> None:
    spec = {
        "steps": [
            llm("a", "alpha"),
            llm("b", "beta"),
            {"id": "gate", "kind": "gate", "depends_on": ["b", "a"]},
            llm("after", "{{steps.gate.output.a.text}} and {{steps.gate.output.b.text}}"),
        ]
    }
    async with stack.http() as http:
        run = await wait_run(http, (await create(http, {"spec": spec}))["id"])
        assert run["status"] == "AWAITING" and step(run, "gate")["status"] == "AWAITING"
        approved = await http.post(f"/v1/workflows/runs/{run['id']}/steps/gate/approve")
        assert approved.status_code == 200
        done = await wait_run(http, run["id"])
        assert done["status"] == "DONE"
        assert step(done, "gate")["output"]["a"]["text"] == "alpha"
        assert step(done, "gate")["output"]["b"]["text"] == "beta"
        assert step(done, "after")["output"]["text"] == "alpha and beta"

        edited = await wait_run(http, (await create(http, {"spec": spec}))["id"])
        answer = await http.post(
            f"/v1/workflows/runs/{edited['id']}/steps/gate/approve",
            json={"edit": {"a": {"text": "A!"}, "b": {"text": "B!"}}},
        )
        assert answer.status_code == 200
        done = await wait_run(http, edited["id"])
        assert step(done, "after")["output"]["text"] == "A! and B!"


async def test_reject_fails_the_run_and_aborts_what_runs_at_the_engine(stack: Stack) -> None:
    spec = {
        "steps": [
            {"id": "gate", "kind": "gate"},
            llm("slow", "never finishes", body={"fake_fault": "hang"}),
            llm("after", "after the gate", depends_on=["gate"]),
        ]
    }
    async with stack.http() as http:
        run = await create(http, {"spec": spec})
        await stack.engine.wait_until(lambda s: s.in_flight == 1, timeout=10)
        rejected = await http.post(
            f"/v1/workflows/runs/{run['id']}/steps/gate/reject", json={"reason": "ugly"}
        )
        assert rejected.status_code == 200, rejected.text
        body = rejected.json()
        assert body["status"] == "FAILED" and "ugly" in body["error"]["message"]
        assert step(body, "gate")["status"] == "FAILED"
        assert step(body, "slow")["status"] == "CANCELED" and step(body, "after")["status"] == "CANCELED"
        assert all(j["status"] == "CANCELED" for j in step(body, "slow")["jobs"])
        await stack.engine.wait_until(lambda s: s.aborted == 1 and s.in_flight == 0, timeout=5)
        assert stack.engine.stats.prompts["after the gate"] == 0
        again = await http.post(f"/v1/workflows/runs/{run['id']}/steps/gate/approve")
        assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"


async def test_cancel_while_a_ten_item_map_is_half_done(hub: RunningHub) -> None:
    spec = {
        "steps": [
            {
                "id": "pics",
                "kind": "map",
                "type": "image",
                "over": "{{inputs.items}}",
                "body": {"prompt": "{{item}}", "fake_fault": "latency=0.3"},
            }
        ]
    }
    async with wf_stack(hub, max_concurrency=2) as stack, stack.http() as http:
        run = await create(http, {"spec": spec, "inputs": {"items": [f"p{i}" for i in range(10)]}})

        async def half_done() -> bool:
            current = (await http.get(f"/v1/workflows/runs/{run['id']}")).json()
            done: int = sum(j["status"] == "PROCESSED" for j in step(current, "pics")["jobs"])
            return done >= 4

        await until(half_done)
        canceled = await http.post(f"/v1/workflows/runs/{run['id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
        await stack.engine.wait_until(lambda s: s.in_flight == 0, timeout=5)
        final = await wait_run(http, run["id"])
        jobs = step(final, "pics")["jobs"]
        assert len(jobs) == 10 and step(final, "pics")["status"] == "CANCELED"
        assert {j["status"] for j in jobs} <= {"PROCESSED", "CANCELED"}
        assert sum(j["status"] == "CANCELED" for j in jobs) >= 1
        listed = (await http.get("/v1/jobs", params={"active": 1})).json()["data"]
        assert listed == []
        assert (await http.post(f"/v1/workflows/runs/{run['id']}/cancel")).status_code == 409


async def test_rerun_of_a_middle_step_reruns_its_descendants_only(stack: Stack) -> None:
    spec = {
        "steps": [
            llm("a", "step a"),
            llm("b", "step b from {{steps.a.output.text}}"),
            llm("c", "step c from {{steps.b.output.text}}", body={"fake_fault": "latency=1"}),
            llm("d", "step d alone"),
        ]
    }
    async with stack.http() as http:
        run = await create(http, {"spec": spec})
        await stack.engine.wait_until(lambda s: s.prompts["step c from step b from step a"] == 1, timeout=10)
        rerun = await http.post(f"/v1/workflows/runs/{run['id']}/steps/b/rerun")
        assert rerun.status_code == 202, rerun.text
        assert step(rerun.json(), "b")["attempt"] == 2 and step(rerun.json(), "c")["attempt"] == 2
        done = await wait_run(http, run["id"])
        assert done["status"] == "DONE", done
        sent = stack.engine.stats.prompts
        assert sent["step a"] == 1 and sent["step d alone"] == 1
        assert sent["step b from step a"] == 2
        assert sent["step c from step b from step a"] == 2
        assert stack.engine.stats.aborted == 1  # c's first job was canceled at the engine
        assert step(done, "a")["attempt"] == 1 and step(done, "d")["attempt"] == 1
        missing = await http.post(f"/v1/workflows/runs/{run['id']}/steps/zzz/rerun")
        assert missing.status_code == 404


async def test_a_failed_step_skips_its_descendants(stack: Stack) -> None:
    spec = {
        "steps": [
            llm("bad", "fails", body={"fake_fault": "status=400"}),
            llm("next", "{{steps.bad.output.text}}"),
            llm("other", "independent"),
        ]
    }
    async with stack.http() as http:
        run = await wait_run(http, (await create(http, {"spec": spec}))["id"])
        assert run["status"] == "FAILED" and run["error"]["step_id"] == "bad"
        assert step(run, "bad")["status"] == "FAILED" and step(run, "next")["status"] == "SKIPPED"
        assert step(run, "other")["status"] == "DONE"


async def test_fan_out_over_the_limit_fails_the_step_clearly(stack: Stack) -> None:
    spec = {
        "steps": [
            {
                "id": "many",
                "kind": "map",
                "type": "image",
                "over": "{{inputs.items}}",
                "body": {"prompt": "{{item}}"},
            }
        ]
    }
    async with stack.http() as http:
        run = await wait_run(
            http, (await create(http, {"spec": spec, "inputs": {"items": list(range(65))}}))["id"]
        )
        assert run["status"] == "FAILED"
        assert "fan-out limit of 64" in step(run, "many")["error"]["message"]
        assert step(run, "many")["jobs"] == []
        assert stack.engine.stats.requests.get("/v1/images/generations", 0) == 0


@pytest.mark.slow
async def test_sixty_four_images_over_four_slots_leave_room_for_synchronous_calls(hub: RunningHub) -> None:
    spec = {
        "steps": [
            {
                "id": "pics",
                "kind": "map",
                "type": "image",
                "over": "{{inputs.items}}",
                "body": {"prompt": "{{item}}", "fake_fault": "latency=0.1"},
            }
        ]
    }
    async with wf_stack(hub, max_concurrency=4, types=["image"]) as stack, stack.http(timeout=60) as http:
        run = await create(http, {"spec": spec, "inputs": {"items": [f"img {i}" for i in range(64)]}})
        await stack.engine.wait_until(lambda s: s.in_flight >= 2, timeout=10)
        direct = await http.post(
            "/v1/images/generations", json={"model": "fake-image", "prompt": "now please"}
        )
        assert direct.status_code == 200, direct.text
        during = (await http.get(f"/v1/workflows/runs/{run['id']}")).json()
        assert during["status"] == "RUNNING"  # the synchronous call did not wait behind the map
        done = await wait_run(http, run["id"], wait=60)
        assert done["status"] == "DONE"
        assert stack.engine.stats.models["fake-image"].max_in_flight <= 4
        outputs = step(done, "pics")["output"]
        assert len(outputs) == 64
        # In item order, whatever order the jobs finished in.
        jobs = {j["id"]: j for j in step(done, "pics")["jobs"]}
        assert len(jobs) == 64
        assert [f["item_index"] for f in done["files"] if f["step_id"] == "pics"] == sorted(range(64))
        assert [o["file_id"] for o in outputs] == [
            f["id"]
            for f in sorted(
                (f for f in done["files"] if f["step_id"] == "pics"), key=lambda f: f["item_index"]
            )
        ]


# --------------------------------------------------------------------------- events and listing


async def _events(http: httpx.AsyncClient, run_id: str, last: str | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": last} if last else {}
    found: list[dict[str, Any]] = []
    async with http.stream("GET", f"/v1/workflows/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id = None
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            if line.startswith("data: "):
                data = orjson.loads(line[6:])
                assert data["seq"] == event_id
                found.append(data)
    return found


async def test_events_stream_step_and_run_changes_and_resume(stack: Stack) -> None:
    spec = {"steps": [llm("a", "one"), llm("b", "two {{steps.a.output.text}}")]}
    async with stack.http() as http:
        run = await create(http, {"spec": spec, "name": "two steps"})
        async with asyncio.timeout(30):
            events = await _events(http, run["id"])
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[0] == {"type": "run", "run_id": run["id"], "status": "RUNNING", "error": None, "seq": 1}
        changes = [(e["type"], e.get("step_id"), e["status"]) for e in events]
        assert changes.index(("step", "a", "DONE")) < changes.index(("step", "b", "RUNNING"))
        assert changes[-1] == ("run", None, "DONE")
        assert step_output(events, "b") == {"text": "two one"}
        resumed = await _events(http, run["id"], last=str(events[2]["seq"]))
        assert resumed == events[3:]
        bad = await http.get(f"/v1/workflows/runs/{run['id']}/events", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 400

        listed = (await http.get("/v1/workflows/runs", params={"status": "DONE"})).json()
        assert [r["id"] for r in listed["data"]] == [run["id"]] and listed["data"][0]["name"] == "two steps"
        assert listed["data"][0]["step_count"] == 2
        assert (await http.get("/v1/workflows/runs", params={"status": "RUNNING"})).json()["data"] == []
        page = (await http.get("/v1/workflows/runs", params={"limit": 1, "after": run["id"]})).json()
        assert page["data"] == [] and page["has_more"] is False
        assert (await http.get("/v1/workflows/runs", params={"status": "NOPE"})).status_code == 400


def step_output(events: list[dict[str, Any]], step_id: str) -> Any:
    return next(e["output"] for e in events if e.get("step_id") == step_id and e["status"] == "DONE")


async def test_idempotency_key_on_run_creation(stack: Stack) -> None:
    body = {"spec": {"steps": [llm("a", "once")]}}
    async with stack.http() as http:
        headers = {"Idempotency-Key": "k1"}
        first = await create(http, body, 202, **headers)
        again = await http.post("/v1/workflows/runs", json=body, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 202 and again.json()["id"] == first["id"]
        assert again.headers["idempotent-replayed"] == "true"
        other = await http.post(
            "/v1/workflows/runs",
            json={"spec": {"steps": [llm("a", "twice")]}},
            headers={"Idempotency-Key": "k1"},
        )
        assert other.status_code == 409
        await wait_run(http, first["id"])
        assert stack.engine.stats.prompts["once"] == 1


# --------------------------------------------------------------------------- bad input


async def _no_runs(http: httpx.AsyncClient) -> None:
    assert (await http.get("/v1/workflows/runs")).json()["data"] == []


BAD_RUNS: list[tuple[dict[str, Any], int, str, str]] = [
    (
        {"spec": {"steps": [llm("a", "{{steps.b.output}}"), llm("b", "{{steps.a.output}}")]}},
        400,
        "invalid_spec",
        "steps[0].depends_on",
    ),
    ({"spec": {"steps": [llm("a", "x"), llm("a", "y")]}}, 400, "invalid_spec", "steps[1].id"),
    ({"spec": {"steps": [{"id": "a", "kind": "teleport"}]}}, 400, "invalid_spec", "steps[0].kind"),
    ({"spec": {"steps": [llm("a", "x", depends_on=["ghost"])]}}, 400, "invalid_spec", "steps[0].depends_on"),
    (
        {"spec": {"steps": [{"id": "m", "kind": "map", "type": "image"}]}},
        400,
        "invalid_spec",
        "steps[0].over",
    ),
    ({"spec": {"steps": [llm(f"s{i}", "x") for i in range(101)]}}, 400, "invalid_spec", "steps"),
    ({"template": "nope", "inputs": {}}, 404, "not_found", "template"),
    (
        {"template": "illustrated-story", "inputs": {"topic": "x", "scenes": 99}},
        400,
        "invalid_request",
        "inputs.scenes",
    ),
    ({"template": "illustrated-story", "inputs": {}}, 400, "invalid_request", "inputs.topic"),
    ({"inputs": {}}, 400, "invalid_request", "template"),
    ({"template": "image-variations", "spec": {"steps": []}}, 400, "invalid_request", "template"),
    (
        {"template": "song-and-cover", "inputs": {"theme": "x", "genre": "polka"}},
        400,
        "invalid_request",
        "inputs.genre",
    ),
    ({"spec": {"steps": [llm("a", "x")]}, "name": 5}, 400, "invalid_request", "name"),
]


async def test_bad_runs_are_refused_and_nothing_is_created(stack: Stack) -> None:
    async with stack.http() as http:
        for body, status, error_type, param in BAD_RUNS:
            answer = await http.post("/v1/workflows/runs", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["error"]["type"] == error_type, body
            assert answer.json()["error"]["param"] == param, (body, answer.text)
        malformed = await http.post("/v1/workflows/runs", content=b"{nope")
        assert malformed.status_code == 400 and "detail" in malformed.json()
        await _no_runs(http)
        assert stack.engine.stats.requests.get("/v1/chat/completions", 0) == 0


async def test_services_nobody_serves_are_listed_before_anything_is_created(hub: RunningHub) -> None:
    async with wf_stack(hub, types=["llm"]) as stack, stack.http() as http:
        answer = await http.post(
            "/v1/workflows/runs", json={"template": "song-and-cover", "inputs": {"theme": "x"}}
        )
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        assert error["type"] == "services_unavailable" and error["missing"] == ["music", "image"]
        named = await http.post(
            "/v1/workflows/runs",
            json={
                "spec": {
                    "steps": [
                        {
                            "id": "a",
                            "kind": "inference",
                            "type": "llm",
                            "model": "ghost-model",
                            "body": {"prompt": "x"},
                        }
                    ]
                }
            },
        )
        assert named.status_code == 409 and "ghost-model" in named.json()["error"]["missing"][0]
        await _no_runs(http)
        assert stack.engine.stats.requests.get("/v1/chat/completions", 0) == 0


async def test_gate_actions_in_the_wrong_state_and_other_users(stack: Stack) -> None:
    spec = {"steps": [llm("a", "x"), {"id": "g", "kind": "gate", "depends_on": ["a"]}]}
    async with stack.http() as http:
        run = await wait_run(http, (await create(http, {"spec": spec}))["id"])
        assert run["status"] == "AWAITING"
        not_gate = await http.post(f"/v1/workflows/runs/{run['id']}/steps/a/approve")
        assert not_gate.status_code == 409 and not_gate.json()["error"]["type"] == "conflict"
        unknown = await http.post(f"/v1/workflows/runs/{run['id']}/steps/zz/approve")
        assert unknown.status_code == 404
        bad_reason = await http.post(f"/v1/workflows/runs/{run['id']}/steps/g/reject", json={"reason": 5})
        assert bad_reason.status_code == 400
        bob = await stack.hub.new_user("bob")
        async with stack.http(bob) as other:
            base = f"/v1/workflows/runs/{run['id']}"
            for method, path in [
                ("GET", base),
                ("GET", f"{base}/events"),
                ("POST", f"{base}/cancel"),
                ("POST", f"{base}/steps/g/approve"),
                ("POST", f"{base}/steps/g/reject"),
                ("POST", f"{base}/steps/a/rerun"),
            ]:
                answer = await other.request(method, path)
                assert answer.status_code == 404, (method, path, answer.text)
                assert answer.json()["error"]["type"] == "not_found"
            assert (await other.get("/v1/workflows/runs")).json()["data"] == []
        approved = await http.post(f"/v1/workflows/runs/{run['id']}/steps/g/approve")
        assert approved.json()["status"] == "DONE"
        twice = await http.post(f"/v1/workflows/runs/{run['id']}/steps/g/approve")
        assert twice.status_code == 409


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
async def test_gates_cancel_and_rerun_on_postgres(tmp_path: Path, postgres_database: str) -> None:
    await _truncate_all(postgres_database)
    settings = make_settings(
        tmp_path / "pg", postgres_database, job_poll_interval_s=0.2, workflow_sweep_interval_s=1.0
    )
    spec = {
        "steps": [
            llm("a", "pg alpha"),
            {
                "id": "fan",
                "kind": "map",
                "type": "image",
                "over": "{{inputs.items}}",
                "body": {"prompt": "{{item}}"},
            },
            {"id": "gate", "kind": "gate", "depends_on": ["a", "fan"]},
            llm("after", "pg after {{steps.gate.output.a.text}}"),
        ]
    }
    async with running_hub(settings) as hub, wf_stack(hub) as stack, stack.http() as http:
        run = await wait_run(
            http, (await create(http, {"spec": spec, "inputs": {"items": ["x", "y"]}}))["id"]
        )
        assert run["status"] == "AWAITING" and len(step(run, "fan")["output"]) == 2
        await http.post(f"/v1/workflows/runs/{run['id']}/steps/gate/approve")
        done = await wait_run(http, run["id"])
        assert done["status"] == "DONE" and step(done, "after")["output"]["text"] == "pg after pg alpha"
        rerun = await http.post(f"/v1/workflows/runs/{run['id']}/steps/fan/rerun")
        assert rerun.status_code == 202
        again = await wait_run(http, run["id"])
        assert again["status"] == "AWAITING" and step(again, "fan")["attempt"] == 2
        assert step(again, "a")["attempt"] == 1 and stack.engine.stats.prompts["pg alpha"] == 1
        canceled = await http.post(f"/v1/workflows/runs/{run['id']}/cancel")
        assert (
            canceled.json()["status"] == "CANCELED" and step(canceled.json(), "gate")["status"] == "CANCELED"
        )


async def test_advancing_is_idempotent_even_when_passes_race(stack: Stack) -> None:
    spec = {
        "steps": [
            llm("a", "race a"),
            {
                "id": "fan",
                "kind": "map",
                "type": "llm",
                "over": "{{inputs.items}}",
                "body": {"prompt": "race {{item}} after {{steps.a.output.text}}"},
            },
            {"id": "g", "kind": "gate", "depends_on": ["fan"]},
        ]
    }
    service = stack.hub.hub.workflows
    async with stack.http() as http:
        run = await create(http, {"spec": spec, "inputs": {"items": ["x", "y", "z"]}})
        # Many passes at once, as several hub processes and the sweep might make them.
        for _ in range(5):
            await asyncio.gather(*[service.advance(run["id"]) for _ in range(8)])
            await asyncio.sleep(0.05)
        done = await wait_run(http, run["id"])
        assert done["status"] == "AWAITING"
        assert len(step(done, "a")["jobs"]) == 1 and len(step(done, "fan")["jobs"]) == 3
        assert [await service.advance(run["id"]) for _ in range(3)] == [False, False, False]
        async with asyncio.timeout(10):
            events = await _events_until(http, run["id"], "AWAITING")
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        changes = [(e.get("step_id"), e["status"]) for e in events]
        assert len(changes) == len(set(changes))  # no step moved twice
        sent = stack.engine.stats.prompts
        assert sent["race a"] == 1 and all(sent[f"race {i} after race a"] == 1 for i in "xyz")


async def _events_until(http: httpx.AsyncClient, run_id: str, run_status: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with http.stream("GET", f"/v1/workflows/runs/{run_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                found.append(orjson.loads(line[6:]))
                if found[-1]["type"] == "run" and found[-1]["status"] == run_status:
                    return found
    return found
