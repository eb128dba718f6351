"""Profile the hub and the agent under load: flame graphs and a top-frames table.

Starts the same processes as ``bench/bench.py`` (mock engine, hub, one agent per hub
path), attaches py-spy (a sampling profiler; ``--nonblocking``, so the profiled
process is never paused) to the hub and to the agent of each path, and runs the
``chat c=16`` and ``stream c=16`` scenarios (``--scenarios`` picks others). Per scenario, path and process it writes

- ``<label>-<scenario>-<path>-<role>.svg``: the flame graph;
- ``<label>-<scenario>-<path>-<role>.txt``: the collapsed stacks (py-spy's ``raw``);

and one ``<label>.md`` with, per process, the functions with the most samples of
their own ("self") and the most samples inside them ("total"), as percentages of the
samples in which the process was busy (idle waits are not sampled).

Usage::

    .venv/bin/python bench/profile.py --label before [--out-dir bench/profiles]
                                      [--paths hub-direct,hub-tunnel] [--requests 3000]

py-spy comes with the test extra (``pip install -e .[test]``). Attaching needs the
right to trace the process (root, or ``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report

import bench  # the sibling modules, whatever the working directory

DEFAULT_SCENARIOS = "chat c=16,stream c=16"
ROLES = ("hub", "agent")


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(bench.VENV_BIN)) or shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found: pip install py-spy (it is in the test extra)")
    return found


@dataclass
class Recorder:
    """py-spy recording one process into a file until stopped."""

    popen: subprocess.Popen[bytes]
    output: Path
    log: Path

    @classmethod
    def start(cls, pid: int, output: Path, fmt: str, rate: int, *, native: bool = False) -> Recorder:
        log = output.with_suffix(output.suffix + ".log")
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [
                    py_spy(),
                    "record",
                    "--pid",
                    str(pid),
                    # C frames need the process paused while its stack is read.
                    *(["--native"] if native else ["--nonblocking"]),
                    "--nolineno",
                    "--rate",
                    str(rate),
                    "--format",
                    fmt,
                    "--output",
                    str(output),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(popen, output, log)

    def stop(self) -> None:
        # SIGINT is py-spy's "Ctrl-C": it stops sampling and writes the file.
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        if not self.output.exists():
            raise RuntimeError(
                f"py-spy wrote no {self.output.name}: {self.log.read_text(errors='replace')[-400:]}"
            )
        self.log.unlink(missing_ok=True)


def read_collapsed(path: Path) -> Counter[tuple[str, ...]]:
    """py-spy's raw format: one ``frame;frame;...;leaf count`` line per distinct stack."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def top_frames(stacks: Counter[tuple[str, ...]], n: int) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(frame, self %, total %)]) for the ``n`` frames with most self, then most total, samples."""
    total = sum(stacks.values())
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    for stack, count in stacks.items():
        own[stack[-1]] += count
        for frame in set(stack):
            inside[frame] += count
    if not total:
        return 0, []
    chosen = [f for f, _ in own.most_common(n)]
    # Frames that hold most of the time without doing it themselves (the event loop's
    # entry points are in nearly every sample and say nothing).
    chosen += [f for f, c in inside.most_common() if f not in chosen and c < 0.9 * total][:n]
    return total, [(f, 100 * own[f] / total, 100 * inside[f] / total) for f in chosen]


def frames_table(title: str, stacks: Counter[tuple[str, ...]], n: int) -> str:
    total, rows = top_frames(stacks, n)
    lines = [f"#### {title} ({total} busy samples)", "", "| frame | self % | total % |", "|---|---:|---:|"]
    lines += [f"| `{frame}` | {own:.1f} | {inside:.1f} |" for frame, own, inside in rows]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> str:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    async with bench.tool_run("ic-profile-") as (setup, clients):
        targets = {name: await bench.PATHS[name][1](setup) for name in args.paths}
        for scenario in args.scenarios:
            for name, target in targets.items():
                stem = f"{args.label}-{scenario.name.replace(' ', '').replace('=', '')}-{name}"
                await bench.run_load(
                    clients, target, scenario, requests=200, warmup=32, max_s=args.max_seconds
                )
                recorders: dict[str, tuple[Recorder, Recorder]] = {}
                for role in ROLES:
                    pid = target.procs[role].popen.pid
                    recorders[role] = (
                        Recorder.start(
                            pid,
                            args.out_dir / f"{stem}-{role}.svg",
                            "flamegraph",
                            args.rate,
                            native=args.native,
                        ),
                        Recorder.start(
                            pid, args.out_dir / f"{stem}-{role}.txt", "raw", args.rate, native=args.native
                        ),
                    )
                await asyncio.sleep(1.0)  # py-spy attaches before the measured phase
                res = await bench.run_load(
                    clients, target, scenario, requests=args.requests, warmup=0, max_s=args.max_seconds
                )
                for pair in recorders.values():
                    for recorder in pair:
                        recorder.stop()
                cpu = ", ".join(
                    f"{role} {1000 * res.cpu_s[role] / max(1, res.done):.2f} ms" for role in ROLES
                )
                print(
                    f"{scenario.name:12} {name:11} n={res.done} err={res.errors} {res.rps:.0f} req/s "
                    f"CPU/request (with py-spy attached): {cpu}",
                    file=sys.stderr,
                    flush=True,
                )
                sections.append(f"### {scenario.name}, {name}: {res.done} requests, {res.errors} errors")
                for role in ROLES:
                    stacks = read_collapsed(recorders[role][1].output)
                    sections += ["", frames_table(f"{role} (`{stem}-{role}.svg`)", stacks, args.top)]
                sections.append("")
    header = [
        f"## Profile `{args.label}`: {report.code_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"py-spy {args.rate} Hz, {'`--native`' if args.native else '`--nonblocking`'}, idle excluded; per process the {args.top} frames with the "
        "most samples of their own (self), then the frames most samples fall inside (total), "
        "leaving out those in over 90 % of them.",
        "",
    ]
    return "\n".join(header + sections)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="profile", help="prefix of the files written (e.g. before, after)")
    parser.add_argument("--out-dir", type=Path, default=bench.BENCH_DIR / "profiles")
    parser.add_argument("--paths", default="hub-direct,hub-tunnel", help="hub paths to profile")
    parser.add_argument("--requests", type=int, default=3000, help="requests per scenario and path")
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument(
        "--native",
        action="store_true",
        help="C frames too (uvloop, the C library): pauses the process at each sample, so slower",
    )
    parser.add_argument("--top", type=int, default=12, help="frames per list")
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help=f"scenarios of bench.py to profile, comma-separated (default {DEFAULT_SCENARIOS!r})",
    )
    args = parser.parse_args(argv)
    args.scenarios = bench.parse_scenarios(parser, args.scenarios)
    args.paths = bench.parse_hub_paths(parser, args.paths)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = bench.run_main(run(args))
    out = args.out_dir / f"{args.label}.md"
    out.write_text(report + "\n")
    print(report)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
