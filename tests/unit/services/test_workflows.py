"""The workflow service on a real database: what a run request may hold, model resolution,
owner-only reads, cancel, gates (approve with or without an edit, reject), rerun, idempotent
replays, lists and the event log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inference_club.errors import Conflict, InvalidRequest, NotFound, ServicesUnavailable
from inference_club.services.workflows import WorkflowSignals
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


def llm(step_id: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "inference", "type": "llm", "body": {"prompt": prompt}, **extra}


def reply(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in run["steps"] if s["id"] == step_id)
    return found


async def create(built: Built, data: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    run, _ = await built.hub.workflows.create(
        built.principal, data, base_url="http://hub", request_id="r", idempotency_key=key
    )
    return run


async def runs(built: Built) -> list[dict[str, Any]]:
    return await built.hub.workflows.list_runs(built.principal.user_id, statuses=[], limit=50, after=None)


GATED = {
    "steps": [
        llm("a", "alpha"),
        {"id": "gate", "kind": "gate", "depends_on": ["a"]},
        llm("b", "{{steps.gate.output.a.text}}!"),
    ]
}


async def at_gate(built: Built) -> dict[str, Any]:
    run = await create(built, {"spec": GATED})
    await built.finish(step(run, "a")["jobs"][0]["id"], result=reply("alpha"))
    await built.hub.workflows.advance(run["id"])
    run = await built.hub.workflows.get(built.principal.user_id, run["id"])
    assert run["status"] == "AWAITING" and step(run, "gate")["status"] == "AWAITING"
    return run


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"spec": {"steps": [llm("a", "x")]}, "name": 5}, "name"),
    ({"spec": {"steps": [llm("a", "x")]}, "name": "n" * 256}, "name"),
    ({"spec": {"steps": [llm("a", "x")]}, "colour": "red"}, "colour"),
    ({}, "template"),
    ({"template": "image-variations", "spec": {"steps": []}}, "template"),
    ({"template": 3}, "template"),
    ({"spec": {"steps": [llm("a", "x")]}, "inputs": [1]}, "inputs"),
]


async def test_a_bad_run_request_is_a_400_and_creates_nothing(built: Built) -> None:
    for data, param in BAD_REQUESTS:
        with pytest.raises(InvalidRequest) as caught:
            await create(built, data)
        assert caught.value.param == param, data
    assert await runs(built) == []


async def test_an_unknown_template_is_not_found(built: Built) -> None:
    with pytest.raises(NotFound) as caught:
        await create(built, {"template": "no-such-template"})
    assert caught.value.param == "template"


async def test_a_step_nobody_serves_refuses_the_whole_run(built: Built) -> None:
    spec = {
        "steps": [
            llm("a", "x"),
            {"id": "pic", "kind": "inference", "type": "image", "body": {"prompt": "p"}},
            llm("b", "y", model="ghost"),
        ]
    }
    with pytest.raises(ServicesUnavailable) as caught:
        await create(built, {"spec": spec})
    assert "image" in caught.value.message and "'ghost'" in caught.value.message
    assert await runs(built) == []
    assert await built.hub.jobs.list_jobs(built.principal.user_id, limit=10) == []


async def test_a_step_without_a_model_gets_a_reachable_one(built: Built) -> None:
    run = await create(
        built,
        {
            "spec": {
                "steps": [{"id": "e", "kind": "inference", "type": "embedding", "body": {"input": "x"}}]
            },
            "name": "mine",
        },
    )
    assert run["name"] == "mine" and step(run, "e")["model"] == "emb"
    assert (await built.job(step(run, "e")["jobs"][0]["id"])).model == "emb"


async def test_another_users_run_is_not_found(built: Built) -> None:
    run = await create(built, {"spec": {"steps": [llm("a", "x")]}})
    bob = await built.user("bob")
    service = built.hub.workflows
    for call in (
        service.get(bob.user_id, run["id"]),
        service.require_run(bob.user_id, run["id"]),
        service.cancel(bob.user_id, run["id"]),
        service.rerun(bob.user_id, run["id"], "a"),
    ):
        with pytest.raises(NotFound):
            await call
    assert await service.list_runs(bob.user_id, statuses=[], limit=10, after=None) == []
    assert (await service.get(built.principal.user_id, run["id"]))["status"] == "RUNNING"


async def test_list_filters_by_status(built: Built) -> None:
    running = await create(built, {"spec": {"steps": [llm("a", "x")]}})
    done = await create(built, {"spec": {"steps": [{"id": "t", "kind": "transform", "input": "v"}]}})
    service = built.hub.workflows
    user = built.principal.user_id
    assert [r["id"] for r in await service.list_runs(user, statuses=["DONE"], limit=10, after=None)] == [
        done["id"]
    ]
    assert [r["id"] for r in await service.list_runs(user, statuses=["RUNNING"], limit=10, after=None)] == [
        running["id"]
    ]
    with pytest.raises(InvalidRequest):
        await service.list_runs(user, statuses=["FINISHED"], limit=10, after=None)
    assert await service.active_runs() == [running["id"]]


async def test_cancel_stops_the_jobs_and_the_steps_once(built: Built) -> None:
    run = await create(built, {"spec": {"steps": [llm("a", "x"), llm("b", "{{steps.a.output.text}}")]}})
    job_id = step(run, "a")["jobs"][0]["id"]
    canceled = await built.hub.workflows.cancel(built.principal.user_id, run["id"])
    assert canceled["status"] == "CANCELED" and canceled["error"]["type"] == "canceled"
    assert [step(canceled, s)["status"] for s in ("a", "b")] == ["CANCELED", "CANCELED"]
    assert (await built.job(job_id)).status == "CANCELED"
    with pytest.raises(Conflict):
        await built.hub.workflows.cancel(built.principal.user_id, run["id"])


async def test_approving_a_gate_passes_its_dependencies_outputs_on(built: Built) -> None:
    run = await at_gate(built)
    approved = await built.hub.workflows.approve(built.principal.user_id, run["id"], "gate")
    assert step(approved, "gate")["output"] == {"a": {"text": "alpha"}}
    [job] = step(approved, "b")["jobs"]
    assert (await built.job(job["id"])).body["messages"][0]["content"] == "alpha!"
    with pytest.raises(Conflict):  # not awaiting any more
        await built.hub.workflows.approve(built.principal.user_id, run["id"], "gate")


async def test_an_edit_replaces_the_gates_output(built: Built) -> None:
    run = await at_gate(built)
    approved = await built.hub.workflows.approve(
        built.principal.user_id, run["id"], "gate", {"a": {"text": "edited"}}
    )
    assert step(approved, "gate")["output"] == {"a": {"text": "edited"}}
    [job] = step(approved, "b")["jobs"]
    assert (await built.job(job["id"])).body["messages"][0]["content"] == "edited!"


async def test_only_an_awaiting_gate_can_be_approved_or_rejected(built: Built) -> None:
    run = await at_gate(built)
    service = built.hub.workflows
    user = built.principal.user_id
    with pytest.raises(Conflict) as caught:
        await service.approve(user, run["id"], "a")
    assert "not a gate" in caught.value.message
    with pytest.raises(NotFound):
        await service.reject(user, run["id"], "nope", None)


async def test_rejecting_a_gate_fails_the_run_and_cancels_the_rest(built: Built) -> None:
    run = await at_gate(built)
    rejected = await built.hub.workflows.reject(built.principal.user_id, run["id"], "gate", "ugly")
    assert rejected["status"] == "FAILED" and rejected["error"]["type"] == "rejected"
    assert "ugly" in rejected["error"]["message"] and rejected["error"]["step_id"] == "gate"
    assert step(rejected, "gate")["status"] == "FAILED" and step(rejected, "b")["status"] == "CANCELED"
    assert step(rejected, "a")["status"] == "DONE"  # what had finished stays


async def test_rerun_runs_the_step_and_its_descendants_again(built: Built) -> None:
    spec = {"steps": [llm("a", "one"), llm("b", "{{steps.a.output.text}} two")]}
    run = await create(built, {"spec": spec})
    first_a = step(run, "a")["jobs"][0]["id"]
    await built.finish(first_a, result=reply("A1"))
    await built.hub.workflows.advance(run["id"])
    run = await built.hub.workflows.get(built.principal.user_id, run["id"])
    first_b = step(run, "b")["jobs"][0]["id"]
    again = await built.hub.workflows.rerun(built.principal.user_id, run["id"], "a")
    assert again["status"] == "RUNNING"
    assert (step(again, "a")["attempt"], step(again, "b")["attempt"]) == (2, 2)
    assert (step(again, "a")["status"], step(again, "b")["status"]) == ("RUNNING", "PENDING")
    assert step(again, "a")["output"] is None
    [new_a] = step(again, "a")["jobs"]
    assert new_a["id"] != first_a
    assert (await built.job(first_b)).status == "CANCELED"  # b's running job was stopped
    with pytest.raises(NotFound):
        await built.hub.workflows.rerun(built.principal.user_id, run["id"], "nope")


async def test_a_step_that_has_not_run_cannot_be_rerun(built: Built) -> None:
    run = await create(built, {"spec": {"steps": [llm("a", "one"), llm("b", "{{steps.a.output.text}}")]}})
    with pytest.raises(Conflict):
        await built.hub.workflows.rerun(built.principal.user_id, run["id"], "b")


async def test_an_idempotency_key_replays_the_run(built: Built) -> None:
    data = {"spec": {"steps": [llm("a", "x")]}}
    first = await create(built, data, key="k")
    _, replayed = await built.hub.workflows.create(
        built.principal, data, base_url="b", request_id="r", idempotency_key="k"
    )
    assert replayed and len(await runs(built)) == 1
    with pytest.raises(Conflict):
        await create(built, {"spec": {"steps": [llm("a", "other")]}}, key="k")
    assert [r["id"] for r in await runs(built)] == [first["id"]]


async def test_events_tell_the_runs_story_and_end_with_it(built: Built) -> None:
    run = await create(built, {"spec": {"steps": [llm("a", "x")]}})
    await built.finish(step(run, "a")["jobs"][0]["id"], result=reply("done"))
    await built.hub.workflows.advance(run["id"])
    events = [e async for e in built.hub.workflows.events(built.principal.user_id, run["id"])]
    story = [(e["type"], e["status"]) for e in events if e is not None]
    assert story[0] == ("run", "RUNNING") and story[-1] == ("run", "DONE")
    assert ("step", "RUNNING") in story and ("step", "DONE") in story
    later = [
        e async for e in built.hub.workflows.events(built.principal.user_id, run["id"], after=len(story) - 1)
    ]
    assert [(e["type"], e["status"]) for e in later if e is not None] == [("run", "DONE")]


async def test_get_with_wait_returns_when_the_run_reaches_a_gate(built: Built) -> None:
    run = await create(built, {"spec": GATED})
    waiting = asyncio.create_task(built.hub.workflows.get(built.principal.user_id, run["id"], wait_s=30))
    await asyncio.sleep(0)
    await built.finish(step(run, "a")["jobs"][0]["id"], result=reply("alpha"))
    await built.hub.workflows.advance(run["id"])
    async with asyncio.timeout(10):
        assert (await waiting)["status"] == "AWAITING"


async def test_signals_wake_the_watchers_of_a_run_and_tell_listeners() -> None:
    signals = WorkflowSignals()
    told: list[str] = []
    signals.on_change(told.append)
    with signals.watch("run_a") as a, signals.watch("run_b") as b:
        signals.publish("run_a")
        assert a.is_set() and not b.is_set() and told == ["run_a"]
        signals.wake("run_b")
        assert b.is_set() and told == ["run_a"]
    assert "watched=0" in repr(signals)
