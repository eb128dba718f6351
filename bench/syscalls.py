"""System calls per request in the hub and the agent, counted by ``strace -c``.

CPU time per request moves with whatever else the machine does (up to 2x between runs
minutes apart on a shared 2-core machine); how many system calls a request makes does
not. Starts the same processes as ``bench/bench.py`` (mock engine, hub, one agent per
hub path), warms each path up, then attaches ``strace -c -f`` to the hub and to the
agent while one scenario runs, and prints a Markdown table: calls per request in all,
and the most frequent ones.

Usage::

    .venv/bin/python bench/syscalls.py [--scenario "chat c=1"] [--requests 500]
                                       [--paths hub-direct,hub-tunnel] [--top 6]

For an A/B, run it twice with ``PYTHONPATH`` pointing at a worktree of each commit (the
processes it starts import the hub from there). Needs ``strace`` (Debian's package of
that name) and the right to trace the processes (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report

import bench  # the sibling modules, whatever the working directory

ROLES = ("hub", "agent")
# One row of strace -c's table: % time, seconds, usecs/call, calls, [errors,] syscall.
_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?([a-z_0-9]+)\s*$")


def parse_summary(text: str) -> dict[str, int]:
    """Calls by system call name from ``strace -c`` output (its ``total`` row left out)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        matched = _ROW.match(line)
        if matched and matched.group(2) != "total":
            calls[matched.group(2)] = int(matched.group(1))
    return calls


def strace() -> str:
    found = shutil.which("strace")
    if found is None:
        raise SystemExit("strace not found: apt-get install strace")
    return found


def start_strace(pid: int, out: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """``strace -c -f`` counting the system calls of ``pid`` and its threads into ``out``."""
    tracer = subprocess.Popen(
        [strace(), "-c", "-f", "-o", str(out), "-p", str(pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return tracer, out


def stop_strace(tracer: subprocess.Popen[bytes], out: Path) -> dict[str, int]:
    tracer.send_signal(signal.SIGINT)  # strace detaches and writes its summary
    tracer.wait(30)
    return parse_summary(out.read_text())


async def run(args: argparse.Namespace) -> str:
    rows: list[str] = []
    async with bench.tool_run("ic-syscalls-") as (setup, clients):
        for name in args.paths:
            target = await bench.PATHS[name][1](setup)
            await bench.run_load(clients, target, args.scenario, requests=200, warmup=32, max_s=20)
            tracers = {
                role: start_strace(
                    target.procs[role].popen.pid, setup.procs.workdir / f"{name}-{role}.strace"
                )
                for role in ROLES
            }
            await asyncio.sleep(1.0)  # strace attaches before the measured phase
            res = await bench.run_load(
                clients, target, args.scenario, requests=args.requests, warmup=0, max_s=120
            )
            for role, (tracer, out) in tracers.items():
                calls = stop_strace(tracer, out)
                done = max(1, res.done)
                top = sorted(calls.items(), key=lambda kv: -kv[1])[: args.top]
                rows.append(
                    f"| {name} | {role} | {res.done} | {sum(calls.values()) / done:.1f} | "
                    + ", ".join(f"{call} {count / done:.1f}" for call, count in top)
                    + " |"
                )
    return "\n".join(
        [
            f"System calls per request, {args.scenario.name} ({report.code_version()}):",
            "",
            "| path | process | requests | calls per request | most frequent (per request) |",
            "|---|---|---:|---:|---|",
            *rows,
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="chat c=1", help="one scenario of bench.py")
    parser.add_argument("--requests", type=int, default=500, help="requests counted per path")
    parser.add_argument("--paths", default="hub-direct,hub-tunnel", help="hub paths to count")
    parser.add_argument("--top", type=int, default=6, help="system calls named per row")
    args = parser.parse_args(argv)
    by_name = {s.name: s for s in bench.SCENARIOS}
    if args.scenario not in by_name:
        parser.error(f"unknown scenario: {args.scenario} (known: {', '.join(by_name)})")
    args.scenario = by_name[args.scenario]
    args.paths = bench.parse_hub_paths(parser, args.paths)
    return args


def main(argv: list[str] | None = None) -> None:
    print(bench.run_main(run(parse_args(argv))))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
