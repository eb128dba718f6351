"""Workflow runs survive ``kill -9`` of the hub, and two hub processes on one PostgreSQL
database advance runs without submitting any step's job twice. Real processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference_club.testing.servers import ProcessHandle, free_port
from tests.conftest import _truncate_all
from tests.e2e.conftest import start_agent, start_fake_engine, start_hub, wait_for_model, write_agent_config
from tests.e2e.job_helpers import client, engine_stats, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENV = {
    "IC_JOB_LEASE_S": "3",
    "IC_JOB_POLL_INTERVAL_S": "0.2",
    "IC_JOB_RETRY_BASE_S": "0.2",
    "IC_JOB_RETRY_MAX_S": "1",
    "IC_WORKFLOW_SWEEP_INTERVAL_S": "1",
}


def _agent_config(path: Path, engine_url: str) -> Path:
    return write_agent_config(
        path,
        [
            {
                "type": "llm",
                "url": f"{engine_url}/v1",
                "max_concurrency": 8,
                "discover": False,
                "models": [{"id": "fake-chat"}],
            },
        ],
    )


def _three_steps(tag: str, latency_s: float) -> dict[str, Any]:
    def llm(step_id: str, prompt: str) -> dict[str, Any]:
        return {
            "id": step_id,
            "kind": "inference",
            "type": "llm",
            "body": {"prompt": prompt, "fake_fault": f"latency={latency_s}"},
        }

    return {
        "steps": [
            llm("one", f"{tag} step one"),
            llm("two", f"{tag} step two after {{{{steps.one.output.text}}}}"),
            llm("three", f"{tag} step three after {{{{steps.two.output.text}}}}"),
        ]
    }


def _run(http: httpx.Client, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = http.get(f"/v1/workflows/runs/{run_id}").json()
    return data


def _step(run: dict[str, Any], step_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in run["steps"] if s["id"] == step_id)
    return found


def test_killing_the_hub_mid_step_two_loses_nothing(tmp_path: Path, processes: list[ProcessHandle]) -> None:
    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    port = free_port()
    hub = start_hub(tmp_path, port=port, env=ENV)
    processes.append(hub.handle)
    agent = start_agent(tmp_path, hub.url, hub.key, "rig", _agent_config(tmp_path / "agent.toml", engine_url))
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-chat", process=agent)

    with client(hub.url, hub.key) as http:
        created = http.post("/v1/workflows/runs", json={"spec": _three_steps("kill", 1.5)})
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        step_two = "kill step two after kill step one"
        wait_until(
            lambda: engine_stats(engine_url)["prompts"].get(step_two, 0) == 1,
            30,
            "step two never reached the engine",
            hub.handle,
            agent,
        )
        hub.handle.kill()

        restarted = start_hub(tmp_path, port=port, data_dir=hub.data_dir, env=ENV, name="hub-2")
        processes.append(restarted.handle)

        def finished() -> bool:
            try:
                return _run(http, run_id)["status"] in ("DONE", "FAILED", "CANCELED")
            except httpx.HTTPError:
                return False

        wait_until(finished, 90, "the run never finished after the restart", restarted.handle, agent)
        run = _run(http, run_id)

    assert run["status"] == "DONE", run
    prompts = engine_stats(engine_url)["prompts"]
    assert prompts["kill step one"] == 1
    assert prompts[f"kill step three after {step_two}"] == 1
    assert prompts[step_two] >= 1  # the attempt cut off by the kill is run again
    assert all(len(_step(run, s)["jobs"]) == 1 for s in ("one", "two", "three"))
    assert _step(run, "three")["output"]["text"] == f"kill step three after {step_two}"


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    asyncio.run(_truncate_all(postgres_database))
    yield postgres_database


def test_two_hubs_on_postgres_submit_every_step_once(
    tmp_path: Path, processes: list[ProcessHandle], postgres_url: str
) -> None:
    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    env = {**ENV, "IC_DATABASE_URL": postgres_url}
    first = start_hub(tmp_path, env=env, data_dir=tmp_path / "data-1", name="hub-a")
    processes.append(first.handle)
    assert first.key, first.handle.log_text()
    agent = start_agent(
        tmp_path, first.url, first.key, "rig", _agent_config(tmp_path / "agent.toml", engine_url)
    )
    processes.append(agent)
    wait_for_model(first.url, first.key, "fake-chat", process=agent)
    second = start_hub(tmp_path, env=env, data_dir=tmp_path / "data-2", name="hub-b")
    processes.append(second.handle)
    wait_for_model(second.url, first.key, "fake-chat")

    tags = [f"pg{i}" for i in range(8)]
    with client(first.url, first.key) as one, client(second.url, first.key) as two:
        ids = []
        for i, tag in enumerate(tags):
            http = one if i % 2 == 0 else two
            answer = http.post("/v1/workflows/runs", json={"spec": _three_steps(tag, 0.2)})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])

        def all_done() -> bool:
            return all(_run(one, run_id)["status"] in ("DONE", "FAILED", "CANCELED") for run_id in ids)

        wait_until(all_done, 90, "runs did not finish", first.handle, second.handle, agent)
        runs = [_run(two, run_id) for run_id in ids]

    assert {r["status"] for r in runs} == {"DONE"}
    for run in runs:
        for step in run["steps"]:
            assert len(step["jobs"]) == 1 and step["jobs"][0]["attempts"] == 1, step
    prompts = engine_stats(engine_url)["prompts"]
    for tag in tags:
        assert prompts[f"{tag} step one"] == 1
        assert prompts[f"{tag} step two after {tag} step one"] == 1
        assert prompts[f"{tag} step three after {tag} step two after {tag} step one"] == 1
