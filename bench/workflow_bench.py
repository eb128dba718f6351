"""Measure the hub's scheduling time per job of a workflow: a 64-wide map on a fast engine.

Starts the mock engine, a hub (SQLite) and one agent (direct transport) exactly as
``bench.py`` does, then runs a workflow ``map`` of 64 chat jobs several times and reports,
per run: the wall time from ``POST /v1/workflows/runs`` to the run's DONE, and that time
per job. The mock engine answers in well under a millisecond and the service allows 256
concurrent requests, so what is measured is the hub: validating and committing the run,
submitting the step's jobs, claiming them, calling the agent, recording each result,
and advancing the run when the last job ends. The same 64 calls made directly as
synchronous chat completions through the hub (64 at once) give the baseline of the
request path alone.

Usage::

    .venv/bin/python bench/workflow_bench.py [--runs 5] [--width 64] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from processes import Processes, free_port, load_average

from bench import HOST, Setup


async def _run_once(http: httpx.AsyncClient, model: str, width: int) -> float:
    spec = {
        "steps": [
            {
                "id": "fan",
                "kind": "map",
                "type": "llm",
                "model": model,
                "over": "{{inputs.items}}",
                "body": {
                    "messages": [{"role": "user", "content": "item {{index}}: {{item}}"}],
                    "max_tokens": 8,
                },
            }
        ]
    }
    started = time.perf_counter()
    created = await http.post(
        "/v1/workflows/runs", json={"spec": spec, "inputs": {"items": list(range(width))}}
    )
    created.raise_for_status()
    run_id = created.json()["id"]
    while True:
        run = (await http.get(f"/v1/workflows/runs/{run_id}", params={"wait": 60})).json()
        if run["status"] in ("DONE", "FAILED", "CANCELED"):
            break
    elapsed = time.perf_counter() - started
    if run["status"] != "DONE":
        raise RuntimeError(f"run ended {run['status']}: {run['error']}")
    return elapsed


async def _sync_once(http: httpx.AsyncClient, model: str, width: int) -> float:
    started = time.perf_counter()
    answers = await asyncio.gather(
        *[
            http.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": f"item {i}"}],
                },
            )
            for i in range(width)
        ]
    )
    for answer in answers:
        answer.raise_for_status()
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="ic-wf-bench-"))
    procs = Processes(workdir)
    setup = Setup(procs, install_litellm=False)
    try:
        target = await setup.agent(
            "bench-wf", "bench-model-wf", ["--direct", "--listen", f"{HOST}:{free_port()}"]
        )
        base = target.base_url.removesuffix("/v1")
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a request
        # never goes out on a connection the server is closing.
        limits = httpx.Limits(max_connections=args.width + 8, keepalive_expiry=2.0)
        async with httpx.AsyncClient(
            base_url=base,
            headers={"authorization": f"Bearer {target.key}"},
            timeout=120,
            limits=limits,
            trust_env=False,
        ) as http:
            load_before = load_average()
            await _run_once(http, target.model, 4)  # warm-up
            await _sync_once(http, target.model, 4)
            flows = [await _run_once(http, target.model, args.width) for _ in range(args.runs)]
            syncs = [await _sync_once(http, target.model, args.width) for _ in range(args.runs)]
            load_after = load_average()
    finally:
        procs.stop_all()
        await setup.aclose()
    per_job = [f / args.width * 1000 for f in flows]
    sync_per = [s / args.width * 1000 for s in syncs]
    lines = [
        f"#### workflow map of {args.width} chat jobs (fast mock engine, max_concurrency 256)",
        "",
        f"- Runs: {args.runs} after a warm-up; load average before: {load_before}; after: {load_after}.",
        "- `per job` = wall time from creating the run to its DONE, divided by the number of jobs.",
        f"- Baseline: the same {args.width} calls as synchronous chat completions through the hub, all at once.",
        "",
        "| measure | median | best | worst |",
        "|---|---:|---:|---:|",
        f"| run wall time, ms | {statistics.median(flows) * 1000:.1f} | {min(flows) * 1000:.1f} | "
        f"{max(flows) * 1000:.1f} |",
        f"| hub scheduling per job, ms | {statistics.median(per_job):.2f} | {min(per_job):.2f} | "
        f"{max(per_job):.2f} |",
        f"| synchronous baseline per call, ms | {statistics.median(sync_per):.2f} | {min(sync_per):.2f} | "
        f"{max(sync_per):.2f} |",
        "",
    ]
    report = "\n".join(lines)
    if args.out:
        args.out.write_text(report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs (after one warm-up)")
    parser.add_argument(
        "--width", type=int, default=64, help="items in the map (at most IC_WORKFLOW_MAX_FANOUT)"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    print(asyncio.run(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
