"""Helpers of the job durability tests: queue jobs over HTTP, watch them, read engine counters."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from inference_club.testing.servers import ProcessHandle
from tests.e2e.conftest import write_agent_config


def embedding_agent_config(path: Path, engine_url: str, *, max_concurrency: int) -> Path:
    return write_agent_config(
        path,
        [
            {
                "type": "embedding",
                "url": f"{engine_url}/v1",
                "max_concurrency": max_concurrency,
                "discover": False,
                "models": [{"id": "fake-embed"}],
            },
        ],
    )


def client(hub_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=hub_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def submit_jobs(http: httpx.Client, count: int, *, latency_s: float, tag: str = "job") -> list[str]:
    ids = []
    for i in range(count):
        answer = http.post(
            "/v1/embeddings",
            json={
                "model": "fake-embed",
                "input": f"{tag}-{i}",
                "fake_fault": f"latency={latency_s}",
                "async": True,
            },
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


def jobs_by_id(http: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    wanted = set(ids)
    found: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if after:
            params["after"] = after
        page = http.get("/v1/jobs", params=params).json()
        for job in page["data"]:
            if job["id"] in wanted:
                found[job["id"]] = job
        if not page["has_more"]:
            return found
        after = page["last_id"]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, *processes: ProcessHandle) -> float:
    """Poll ``predicate``; returns the seconds it took. Shows process logs on timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            logs = "\n\n".join(f"{p.describe()}:\n{p.log_tail(30)}" for p in processes)
            raise TimeoutError(f"{what} within {timeout}s\n{logs}")
        time.sleep(0.1)
    return time.monotonic() - started


def engine_stats(engine_url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{engine_url}/_stats", timeout=5).json()
    return data


def job_completions(stats: dict[str, Any]) -> int:
    """Answers the engine sent to the end, leaving out the agent's model discovery."""
    return int(stats["completed"]) - int(stats["requests"].get("/v1/models", 0))


def wait_all_ended(
    http: httpx.Client, ids: list[str], timeout: float, *processes: ProcessHandle
) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}

    def ended() -> bool:
        nonlocal state
        try:
            state = jobs_by_id(http, ids)
        except httpx.HTTPError:
            return False
        return len(state) == len(ids) and all(
            j["status"] in ("PROCESSED", "FAILED", "CANCELED") for j in state.values()
        )

    wait_until(ended, timeout, "jobs did not all end", *processes)
    return state
