"""Scale-out: the same load through nginx to 1 and to 3 hub replicas.

Each shape is a whole cluster from ``inference_club/testing/cluster.py`` (a fresh
PostgreSQL database, a private Redis, a moto S3 server, nginx, the replicas, the fake
engine and two agents tunnelled through nginx). Scenario by scenario the load generator of
``bench/bench.py`` (pooled ``httpx`` clients) sends chat completions to nginx, and the CPU
time every process used during the measured phase is read from /proc: the report gives
requests per second, p50/p99 latency and CPU milliseconds per request for each replica,
nginx, the engine, the agents and the load generator.

Every process of both clusters runs on the same machine, so on a small one (2 cores)
three replicas compete with nginx, the engine, the agents and the load generator for the
same cores: the CPU per request is the figure that carries over, the requests per second
are a floor.

Usage::

    .venv/bin/python bench/scaleout_bench.py [--requests N] [--replicas 1,3] [--out FILE]

Needs what the scale-out suite needs: PostgreSQL at 127.0.0.1:5432 (``IC_TEST_POSTGRES_DSN``),
``redis-server``, ``nginx`` (Debian package) and moto (the test extra).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the package, when run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/bench.py

from processes import load_average
from report import Result, Scenario, code_version, fmt, machine, pct

from bench import (  # bench/ is a directory of scripts: found through sys.path above
    STREAM_CHUNKS,
    Target,
    run_load,
)
from inference_club.testing.cluster import Cluster, running_cluster

SCENARIOS = (
    Scenario("chat c=16", 16, False),
    Scenario("chat c=64", 64, False),
    Scenario("stream c=16", 16, True),
)
HUB_ENV = {"IC_QUEUE_TIMEOUT_S": "60", "IC_LOG_LEVEL": "warning"}


@dataclass
class _Proc:
    """What ``bench.run_load`` reads of a process: its pid (the process group's id)."""

    popen: object


@dataclass
class Measured:
    replicas: int
    scenario: Scenario
    result: Result


def targets(cluster: Cluster) -> Target:
    procs: dict[str, _Proc] = {}
    for replica in cluster.replicas:
        assert replica.handle is not None
        procs[replica.replica_id] = _Proc(replica.handle.process)
    assert cluster.nginx is not None and cluster.engine is not None
    procs["nginx"] = _Proc(cluster.nginx.handle.process)
    procs["engine"] = _Proc(cluster.engine.process)
    for number, agent in enumerate(cluster.agents, start=1):
        procs[f"agent-{number}"] = _Proc(agent.process)
    return Target(base_url=f"{cluster.url}/v1", key=cluster.admin_key, model="fake-chat", procs=procs)  # type: ignore[arg-type]


async def measure(cluster: Cluster, replicas: int, requests: int, max_s: float) -> list[Measured]:
    async with httpx.AsyncClient(timeout=10) as http:  # streams of STREAM_CHUNKS content chunks
        await http.post(f"{cluster.engine_url}/_control", json={"settings": {"stream_chunks": STREAM_CHUNKS}})
    target = targets(cluster)
    measured = []
    for scenario in SCENARIOS:
        clients = [
            httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=8))
            for _ in range(max(1, scenario.concurrency // 8))
        ]
        try:
            result = await run_load(
                clients, target, scenario, requests=requests, warmup=min(100, requests // 5), max_s=max_s
            )
        finally:
            for client in clients:
                await client.aclose()
        measured.append(Measured(replicas, scenario, result))
        print(
            f"{replicas} replica(s), {scenario.name}: {result.done} done, {result.errors} errors, "
            f"{result.rps:.1f} req/s",
            file=sys.stderr,
        )
    return measured


def report(rows: list[Measured], args: argparse.Namespace, loads: list[str]) -> str:
    lines = [
        "## Scale-out: 1 vs 3 hub replicas through nginx (`bench/scaleout_bench.py`)",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        *machine(),
        f"- Load average before each cluster: {'; '.join(loads)}",
        f"- Code: {code_version()}",
        f"- Command: `.venv/bin/python bench/scaleout_bench.py --requests {args.requests} "
        f"--replicas {','.join(map(str, args.replicas))}`",
        "- Every process shares the machine's cores: PostgreSQL, Redis, moto, nginx, the replicas, "
        "the fake engine, two agents (tunnels through nginx) and the load generator.",
        "",
        "| replicas | scenario | done | errors | req/s | p50 ms | p99 ms | CPU ms/request per replica "
        "| all replicas | nginx | engine | agents | client |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        res = row.result
        if not res.done:
            lines.append(
                f"| {row.replicas} | {row.scenario.name} | 0 | {res.errors} | | | | {res.first_error} "
                "| | | | | |"
            )
            continue
        per = {role: 1000 * cpu / res.done for role, cpu in res.cpu_s.items()}
        replica_cells = [v for role, v in sorted(per.items()) if role.startswith("replica-")]
        agents = sum(v for role, v in per.items() if role.startswith("agent-"))
        lines.append(
            f"| {row.replicas} | {row.scenario.name} | {res.done} | {res.errors} | {fmt(res.rps)} "
            f"| {fmt(pct(res.latencies, 50))} | {fmt(pct(res.latencies, 99))} "
            f"| {' / '.join(fmt(v, 2) for v in replica_cells)} | {fmt(sum(replica_cells), 2)} "
            f"| {fmt(per.get('nginx', 0.0), 2)} | {fmt(per.get('engine', 0.0), 2)} | {fmt(agents, 2)} "
            f"| {fmt(per.get('client', 0.0), 2)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests", type=int, default=1000, help="measured requests per scenario (default 1000)"
    )
    parser.add_argument("--replicas", default="1,3", help="cluster sizes to measure (default 1,3)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop a scenario after this long")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
    args = parser.parse_args(argv)
    args.replicas = [int(n) for n in args.replicas.split(",") if n.strip()]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows: list[Measured] = []
    loads: list[str] = []
    for count in args.replicas:
        loads.append(f"{count} replica(s): {load_average()}")
        with (
            tempfile.TemporaryDirectory(prefix="ic-scaleout-bench-") as tmp,
            running_cluster(Path(tmp), replicas=count, agents=2, hub_env=HUB_ENV) as cluster,
        ):
            rows += asyncio.run(measure(cluster, count, args.requests, args.max_seconds))
    text = report(rows, args, loads)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
