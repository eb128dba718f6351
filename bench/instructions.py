"""Instructions per request in the hub and the agent, counted by callgrind.

CPU time per request moves with whatever else the machine does (up to 2x between runs
minutes apart on a shared 2-core machine), and a change of a few percent drowns in it.
The instructions a process executes per request hardly move: callgrind counts them
whatever else runs. Starts the same processes as ``bench/bench.py`` with the hub and
the agents under ``valgrind --tool=callgrind`` (counting switched off while they start),
then per path: switches counting on, warms up, measures each process's idle rate (what
its timers cost per second), reads the totals (``callgrind_control -e``), runs the
scenario, reads them again, and prints a Markdown table of thousands of instructions per
request, the idle rate times the phase's length taken off.

Under callgrind the processes run some 50 times slower, so latencies and CPU times mean
nothing here, and a process wakes up for fewer requests at a time than at full speed
(at c=16 it batches more: it is the slowest part). Compare runs of one scenario and
request count with each other only; the counts are for A/B, not for the CPU targets.

Usage::

    .venv/bin/python bench/instructions.py [--scenarios "chat c=1,chat c=16"] [--requests 1000]
                                           [--paths hub-direct,hub-tunnel] [--roles hub,agent]

For an A/B, run it twice with ``PYTHONPATH`` pointing at a worktree of each commit (the
processes it starts import the hub from there). Needs valgrind (Debian's package of
that name).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report

import bench  # the sibling modules, whatever the working directory

DEFAULT_SCENARIOS = "chat c=1,chat c=16,stream c=16"
ROLES = ("hub", "agent")
_THREAD_TOTAL = re.compile(r"^\s*Th\s+\d+\s+([\d,]+)\s*$", re.MULTILINE)


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: apt-get install valgrind")
    return found


def parse_totals(text: str) -> int:
    """Instructions so far, all threads, from ``callgrind_control -e`` output."""
    _, found, tail = text.partition("Totals:")
    counts = _THREAD_TOTAL.findall(tail) if found else []
    if not counts:
        raise RuntimeError(f"no totals in callgrind_control's answer: {text[-300:]!r}")
    return sum(int(count.replace(",", "")) for count in counts)


def control(pid: int, *options: str) -> str:
    done = subprocess.run(
        [tool("callgrind_control"), *options, str(pid)], capture_output=True, text=True, timeout=300
    )
    return done.stdout


def under_callgrind(roles: set[str], out_dir: Path) -> bench.Wrap:
    def wrap(role: str, argv: list[str]) -> list[str]:
        if role not in roles:
            return argv
        return [
            tool("valgrind"),
            "--tool=callgrind",
            "--instr-atstart=no",  # starting up at callgrind's full cost would take minutes
            f"--callgrind-out-file={out_dir}/callgrind.{role}.%p",
            *argv,
        ]

    return wrap


async def idle_rates(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Instructions per second of each process with no request in flight: its timers
    (the usage recorder, the dispatcher's poll, heartbeats), which run per second, not per
    request. Under callgrind a second holds ~50 times fewer requests than at full speed,
    so this is taken off the measured phase's count, in proportion to its length."""
    start = {role: parse_totals(control(pid, "-e")) for role, pid in pids.items()}
    began = time.monotonic()
    await asyncio.sleep(seconds)
    end = {role: parse_totals(control(pid, "-e")) for role, pid in pids.items()}
    elapsed = time.monotonic() - began
    return {role: (end[role] - start[role]) / elapsed for role in pids}


async def run(args: argparse.Namespace) -> str:
    rows: list[str] = []
    async with bench.tool_run("ic-instructions-") as (setup, clients):
        setup.wrap = under_callgrind(set(args.roles), setup.procs.workdir)
        for name in args.paths:
            target = await bench.PATHS[name][1](setup)
            pids = {role: target.procs[role].popen.pid for role in args.roles}
            for pid in pids.values():
                control(pid, "--instr=on")
            for scenario in args.scenarios:
                await bench.run_load(clients, target, scenario, requests=100, warmup=20, max_s=600)
                idle = await idle_rates(pids, args.idle_seconds)
                before = {role: parse_totals(control(pid, "-e")) for role, pid in pids.items()}
                res = await bench.run_load(
                    clients, target, scenario, requests=args.requests, warmup=0, max_s=1800
                )
                after = {role: parse_totals(control(pid, "-e")) for role, pid in pids.items()}
                done = max(1, res.done)
                cells = " | ".join(
                    f"{(after[r] - before[r] - idle[r] * res.wall_s) / done / 1000:,.0f}" for r in args.roles
                )
                rows.append(f"| {scenario.name} | {name} | {res.done} | {res.errors} | {cells} |")
                print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(
        [
            f"Thousands of instructions per request, under callgrind ({report.code_version()}):",
            "",
            "| scenario | path | requests | errors | " + " | ".join(args.roles) + " |",
            "|---|---|---:|---:|" + "---:|" * len(args.roles),
            *rows,
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help=f"scenarios of bench.py, comma-separated (default {DEFAULT_SCENARIOS!r})",
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per scenario and path")
    parser.add_argument("--paths", default="hub-direct,hub-tunnel", help="hub paths to count")
    parser.add_argument("--roles", default="hub,agent", help="processes to count: hub, agent or both")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="how long each process's idle rate is measured"
    )
    args = parser.parse_args(argv)
    args.scenarios = bench.parse_scenarios(parser, args.scenarios)
    args.roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if not args.roles or set(args.roles) - set(ROLES):
        parser.error(f"--roles takes {' and '.join(ROLES)}")
    args.paths = bench.parse_hub_paths(parser, args.paths)
    return args


def main(argv: list[str] | None = None) -> None:
    print(bench.run_main(run(parse_args(argv))))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
