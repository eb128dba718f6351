"""What a bench run measured (scenarios, results) and how it is written up (Markdown tables)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    stream: bool


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds, whole request
    ttfb: list[float] = field(default_factory=list)  # seconds, first SSE data line
    errors: int = 0
    first_error: str = ""
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds while measured

    @property
    def done(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.done / self.wall_s if self.wall_s else 0.0


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1] * 1000


def fmt(x: float, digits: int = 1) -> str:
    return "—" if x != x else f"{x:,.{digits}f}"


def table(scenario: Scenario, rows: dict[str, Result | str]) -> str:
    base = rows.get("direct")
    base = base if isinstance(base, Result) and base.done else None
    lines = [f"### {scenario.name} ({'streaming' if scenario.stream else 'non-streaming'})", ""]
    if scenario.stream:
        lines += [
            "| path | n | err | TTFB p50 ms | TTFB p99 ms | stream p50 ms | stream p99 ms | req/s "
            "| added TTFB p50 ms | added stream p50 ms | stream p50 x | req/s x |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    else:
        lines += [
            "| path | n | err | p50 ms | p99 ms | req/s | added p50 ms | added p99 ms | p50 x | req/s x |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
    width = 12 if scenario.stream else 10
    for name, res in rows.items():
        if isinstance(res, str):
            lines.append(f"| {name} | unavailable (see Paths) |" + " |" * (width - 2))
            continue
        p50, p99 = pct(res.latencies, 50), pct(res.latencies, 99)
        cells = [name, str(res.done), str(res.errors)]
        if scenario.stream:
            t50, t99 = pct(res.ttfb, 50), pct(res.ttfb, 99)
            cells += [fmt(t50, 2), fmt(t99, 2), fmt(p50, 2), fmt(p99, 2), fmt(res.rps, 0)]
            if base is not None:
                b_t50, b50 = pct(base.ttfb, 50), pct(base.latencies, 50)
                cells += [
                    fmt(t50 - b_t50, 2),
                    fmt(p50 - b50, 2),
                    fmt(p50 / b50, 2) + "x",
                    fmt(res.rps / base.rps, 2) + "x",
                ]
            else:
                cells += ["—"] * 4
        else:
            cells += [fmt(p50, 2), fmt(p99, 2), fmt(res.rps, 0)]
            if base is not None:
                b50, b99 = pct(base.latencies, 50), pct(base.latencies, 99)
                cells += [
                    fmt(p50 - b50, 2),
                    fmt(p99 - b99, 2),
                    fmt(p50 / b50, 2) + "x",
                    fmt(res.rps / base.rps, 2) + "x",
                ]
            else:
                cells += ["—"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    errors = [
        f"- {name}: {res.errors} errors, first: `{res.first_error}`"
        for name, res in rows.items()
        if isinstance(res, Result) and res.errors
    ]
    if errors:
        lines += ["", *errors]
    return "\n".join(lines)


CPU_ROLES = ("engine", "fwd-1", "fwd-2", "hub", "agent", "litellm", "client")


def cpu_table(results: dict[Scenario, dict[str, Result | str]]) -> str:
    """CPU time per completed request of each process, from /proc, during the measured phase."""
    lines = [
        "### CPU time per request (ms)",
        "",
        "User + system CPU of each process during the measured phase, divided by the requests "
        "completed (`client` is the load generator itself). Resolution is 10 ms per process "
        "and scenario, so small values on short runs are rough.",
        "",
        "| scenario | path | " + " | ".join(CPU_ROLES) + " | servers total |",
        "|---|---|" + "---:|" * (len(CPU_ROLES) + 1),
    ]
    for scenario, rows in results.items():
        for name, res in rows.items():
            if not isinstance(res, Result) or not res.done:
                continue
            per = {role: 1000 * cpu / res.done for role, cpu in res.cpu_s.items()}
            servers = sum(v for role, v in per.items() if role != "client")
            cells = [fmt(per[r], 2) if r in per else "" for r in CPU_ROLES]
            lines.append(f"| {scenario.name} | {name} | " + " | ".join(cells) + f" | {fmt(servers, 2)} |")
    return "\n".join(lines)


def code_version() -> str:
    """The commit measured, and whether the package had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "inference_club"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not dirty:
        return f"commit {head}"
    return f"commit {head} plus uncommitted changes to {len(dirty)} path(s) under inference_club/"


def machine() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return [
        f"- CPU: {os.cpu_count()} cores (`nproc`), {cpu}",
        f"- RAM: {ram}",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Python: {platform.python_version()} ({sys.executable.replace(str(ROOT) + '/', '')})",
    ]
