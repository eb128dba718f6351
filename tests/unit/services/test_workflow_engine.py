"""Advancing workflow runs on a real database: steps start when their dependencies are done,
map steps fan out one job per item (within the limit), outputs flow on, a failure skips what
depends on it and fails the run, and a pass that finds nothing to move changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inference_club.services.workflow_engine import job_request_id, run_id_of
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path, workflow_max_fanout=4) as built:
        yield built


def llm(step_id: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "inference", "type": "llm", "body": {"prompt": prompt}, **extra}


def reply(text: str) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": text}}]}


def step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in run["steps"] if s["id"] == step_id)
    return found


async def start(built: Built, spec: dict[str, Any], inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"spec": spec}
    if inputs is not None:
        data["inputs"] = inputs
    run, _ = await built.hub.workflows.create(built.principal, data, base_url="http://hub", request_id="r")
    return run


async def current(built: Built, run_id: str) -> dict[str, Any]:
    return await built.hub.workflows.get(built.principal.user_id, run_id)


def test_a_jobs_request_id_leads_back_to_its_run() -> None:
    tag = job_request_id("run_abc", "summarise", 2, 7)
    assert tag == "run_abc/2/7/summarise" and run_id_of(tag) == "run_abc"
    assert len(job_request_id("run_abc", "s" * 80, 1, 0)) == 64
    assert run_id_of("req_123") is None and run_id_of("job_1/2") is None and run_id_of("run_x") is None


async def test_a_step_waits_for_its_dependency_and_reads_its_output(built: Built) -> None:
    run = await start(built, {"steps": [llm("a", "first"), llm("b", "after {{steps.a.output.text}}")]})
    assert run["status"] == "RUNNING"
    assert (step(run, "a")["status"], step(run, "b")["status"]) == ("RUNNING", "PENDING")
    [job_a] = step(run, "a")["jobs"]
    assert step(run, "b")["jobs"] == []
    stored = await built.job(job_a["id"])
    assert stored.body["messages"] == [{"role": "user", "content": "first"}] and stored.model == "chat"
    assert run_id_of(stored.request_id) == run["id"]

    assert not await built.hub.workflows.advance(run["id"])  # nothing can move yet
    await built.finish(job_a["id"], result=reply("alpha"))
    assert await built.hub.workflows.advance(run["id"])
    run = await current(built, run["id"])
    assert step(run, "a")["status"] == "DONE" and step(run, "a")["output"] == {"text": "alpha"}
    [job_b] = step(run, "b")["jobs"]
    assert (await built.job(job_b["id"])).body["messages"][0]["content"] == "after alpha"

    await built.finish(job_b["id"], result=reply("beta"))
    assert await built.hub.workflows.advance(run["id"])
    run = await current(built, run["id"])
    assert run["status"] == "DONE" and run["finished_at"] is not None
    assert step(run, "b")["output"] == {"text": "beta"}
    assert not await built.hub.workflows.advance(run["id"])  # a finished run does not move


async def test_a_map_fans_out_and_collects_outputs_in_item_order(built: Built) -> None:
    spec = {
        "steps": [
            {
                "id": "fan",
                "kind": "map",
                "type": "embedding",
                "over": "{{inputs.items}}",
                "body": {"input": "{{item}} #{{index}}"},
            },
            {"id": "all", "kind": "collect", "from": "fan"},
        ]
    }
    run = await start(built, spec, {"items": ["x", "y", "z"]})
    jobs = step(run, "fan")["jobs"]
    assert len(jobs) == 3
    bodies = {j["id"]: (await built.job(j["id"])).body["input"] for j in jobs}
    assert sorted(bodies.values()) == ["x #0", "y #1", "z #2"]
    by_input = {v: k for k, v in bodies.items()}
    await built.finish(by_input["z #2"], result={"data": [{"embedding": [2]}]})
    await built.finish(by_input["x #0"], result={"data": [{"embedding": [0]}]})
    assert not await built.hub.workflows.advance(run["id"])  # one item still runs
    assert step(await current(built, run["id"]), "fan")["status"] == "RUNNING"
    await built.finish(by_input["y #1"], result={"data": [{"embedding": [1]}]})
    assert await built.hub.workflows.advance(run["id"])
    run = await current(built, run["id"])
    expected = [{"embedding": [0]}, {"embedding": [1]}, {"embedding": [2]}]
    assert step(run, "fan")["output"] == expected and step(run, "all")["output"] == expected
    assert run["status"] == "DONE"


async def test_an_empty_map_is_done_at_once_and_a_wide_one_submits_nothing(built: Built) -> None:
    spec = {
        "steps": [
            {
                "id": "fan",
                "kind": "map",
                "type": "embedding",
                "over": "{{inputs.items}}",
                "body": {"input": "{{item}}"},
            }
        ]
    }
    empty = await start(built, spec, {"items": []})
    assert empty["status"] == "DONE" and step(empty, "fan")["output"] == []
    wide = await start(built, spec, {"items": list("abcde")})
    assert wide["status"] == "FAILED" and step(wide, "fan")["status"] == "FAILED"
    assert "fan-out limit of 4" in step(wide, "fan")["error"]["message"]
    assert await built.hub.jobs.list_jobs(built.principal.user_id, limit=10) == []


async def test_a_failed_job_fails_its_step_skips_dependents_and_fails_the_run(built: Built) -> None:
    spec = {"steps": [llm("a", "one"), llm("b", "{{steps.a.output.text}}"), llm("c", "independent")]}
    run = await start(built, spec)
    [job_a] = step(run, "a")["jobs"]
    [job_c] = step(run, "c")["jobs"]
    await built.finish(
        job_a["id"], status="FAILED", error={"message": "engine died", "type": "upstream_error"}
    )
    await built.hub.workflows.advance(run["id"])
    run = await current(built, run["id"])
    assert step(run, "a")["status"] == "FAILED" and step(run, "a")["error"]["type"] == "job_failed"
    assert "engine died" in step(run, "a")["error"]["message"]
    assert step(run, "b")["status"] == "SKIPPED" and step(run, "b")["jobs"] == []
    assert run["status"] == "RUNNING"  # c still runs
    await built.finish(job_c["id"], result=reply("fine"))
    await built.hub.workflows.advance(run["id"])
    run = await current(built, run["id"])
    assert run["status"] == "FAILED" and run["error"]["step_id"] == "a"
    assert step(run, "c")["status"] == "DONE"


async def test_transforms_and_collects_run_inline(built: Built) -> None:
    spec = {
        "steps": [
            {"id": "lines", "kind": "transform", "op": "split_lines", "input": "{{inputs.text}}"},
            {"id": "both", "kind": "collect", "from": ["lines"]},
        ]
    }
    run = await start(built, spec, {"text": "one\ntwo"})
    assert run["status"] == "DONE"
    assert step(run, "lines")["output"] == ["one", "two"]
    assert step(run, "both")["output"] == {"lines": ["one", "two"]}


async def test_an_answer_that_is_not_the_asked_json_fails_the_step(built: Built) -> None:
    run = await start(built, {"steps": [llm("a", "give json", extract="json")]})
    [job] = step(run, "a")["jobs"]
    await built.finish(job["id"], result=reply("no json here"))
    await built.hub.workflows.advance(run["id"])
    run = await current(built, run["id"])
    assert step(run, "a")["status"] == "FAILED" and step(run, "a")["error"]["type"] == "invalid_output"
    assert run["status"] == "FAILED"


async def test_an_inlined_file_is_sent_as_a_data_uri_and_a_missing_one_fails(built: Built) -> None:
    record = await built.hub.files.save(
        user_id=built.principal.user_id, data=b"hi", content_type="text/plain", purpose="input"
    )
    spec = {
        "steps": [
            {
                "id": "e",
                "kind": "inference",
                "type": "embedding",
                "body": {"input": "{{inputs.file}}"},
                "inline_files": ["input"],
            }
        ]
    }
    run = await start(built, spec, {"file": record.id})
    [job] = step(run, "e")["jobs"]
    assert (await built.job(job["id"])).body["input"] == "data:text/plain;base64,aGk="
    missing = await start(built, spec, {"file": "file_nope"})
    assert step(missing, "e")["status"] == "FAILED" and "no file" in step(missing, "e")["error"]["message"]
