"""Measure what the hub adds to a chat completion, against a direct call and LiteLLM.

One run starts a fast mock engine (``bench/mock_engine.py``), a hub with a throwaway
SQLite data dir, one agent per hub path, and optionally a LiteLLM proxy in its own
venv, all on 127.0.0.1. Then, scenario by scenario, it measures every path back to
back with an ``httpx.AsyncClient`` load generator (one pooled client per path):

- ``chat c=1``, ``chat c=16``, ``chat c=64``: non-streaming chat completions;
- ``stream c=1``, ``stream c=16``: streamed chat completions, timing both the first
  SSE ``data:`` line (TTFB) and the whole stream up to ``data: [DONE]``.

Each table gives p50/p99 latency, requests per second, and ratios to ``direct`` from
the same run. Every process started here is stopped at the end, also on errors.

Usage::

    .venv/bin/python bench/bench.py [--requests N] [--paths direct,hub-direct,litellm]
                                    [--no-litellm] [--out bench/RESULTS.md]

Paths are entries of :data:`PATHS`; each knows how to start what it needs and reports
itself "unavailable" (with the reason) when it cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
LITELLM_VENV = BENCH_DIR / ".litellm-venv"
LITELLM_VERSION = "1.108.7"
HOST = "127.0.0.1"
ENGINE_MODEL = "bench-model"
STREAM_CHUNKS = 20
MESSAGES = [{"role": "user", "content": "Say something short."}]
CONNECTIONS_PER_CLIENT = 8  # per pooled load-generator client; see run()


class Unavailable(Exception):
    """A path cannot be measured; the message says why."""


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def tail(self, lines: int = 8) -> str:
        out: list[str] = []
        for path in (self.stderr, self.stdout):
            with contextlib.suppress(OSError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out[-lines:])

    def last_error_line(self) -> str:
        with contextlib.suppress(OSError):
            for line in reversed(self.stderr.read_text(errors="replace").splitlines()):
                if line.strip():
                    return line.strip()
        return f"exited with status {self.popen.returncode}"


class Processes:
    """Every child process of a run, each in its own process group, stopped together."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        stdout = self.workdir / f"{name}.out"
        stderr = self.workdir / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, **_loopback_env(), **(env or {})},
                cwd=self.workdir,
                start_new_session=True,
            )
        proc = Proc(name, popen, stdout, stderr)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace_s: float = 10.0) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(5)
        # Children left in the group (workers) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def _loopback_env() -> dict[str, str]:
    # Nothing here may go through a proxy; all traffic is on 127.0.0.1.
    return {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, proc: Proc | None = None, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise Unavailable(f"{what}: {proc.name} exited ({proc.last_error_line()})")
        with contextlib.suppress(httpx.HTTPError):
            if await check():
                return
        await asyncio.sleep(0.1)
    raise Unavailable(f"{what}: not ready after {timeout_s:.0f} s")


async def read_first_line(proc: Proc, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = proc.stdout.read_text(errors="replace")
        if "\n" in text:
            return text.split("\n", 1)[0].strip()
        if proc.popen.poll() is not None:
            raise Unavailable(f"{proc.name} exited ({proc.last_error_line()})")
        await asyncio.sleep(0.05)
    raise Unavailable(f"{proc.name} printed nothing in {timeout_s:.0f} s")


def models_listed(client: httpx.AsyncClient, url: str, key: str | None, model: str) -> Callable[[], Awaitable[bool]]:
    headers = {"authorization": f"Bearer {key}"} if key else {}

    async def check() -> bool:
        r = await client.get(url, headers=headers, timeout=2)
        return r.status_code == 200 and any(m.get("id") == model for m in r.json().get("data", []))

    return check


# --------------------------------------------------------------------------- the setup


@dataclass
class Target:
    """Where a path sends its requests."""

    base_url: str  # ends with /v1
    key: str | None
    model: str
    procs: dict[str, Proc] = field(default_factory=dict)  # role -> the process serving it


@dataclass
class Setup:
    """Shared pieces (engine, hub) started on first use, and the run's processes."""

    procs: Processes
    install_litellm: bool
    engine_url: str = ""
    engine_proc: Proc | None = None
    hub_url: str = ""
    hub_key: str = ""
    hub_proc: Proc | None = None
    probe: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(trust_env=False))

    async def engine(self) -> str:
        if not self.engine_url:
            proc = self.procs.start(
                "engine",
                [sys.executable, str(BENCH_DIR / "mock_engine.py"), "--host", HOST, "--port", "0",
                 "--model", ENGINE_MODEL, "--chunks", str(STREAM_CHUNKS)],
            )
            line = await read_first_line(proc, 15)
            if not line.startswith("ready "):
                raise RuntimeError(f"mock engine: unexpected first line {line!r}")
            url = f"http://{HOST}:{line.split()[1]}/v1"
            await wait_for(models_listed(self.probe, url + "/models", None, ENGINE_MODEL),
                           timeout_s=15, proc=proc, what="mock engine")
            self.engine_url, self.engine_proc = url, proc
        return self.engine_url

    async def hub(self) -> tuple[str, str]:
        if not self.hub_url:
            port = free_port()
            data_dir = self.procs.workdir / "hub-data"
            data_dir.mkdir()
            proc = self.procs.start(
                "hub",
                [str(VENV_BIN / "inference-club"), "serve", "--host", HOST, "--port", str(port),
                 "--data-dir", str(data_dir)],
            )
            key = await read_first_line(proc, 60)
            url = f"http://{HOST}:{port}"

            async def up() -> bool:
                return (await self.probe.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"},
                                             timeout=2)).status_code == 200

            await wait_for(up, timeout_s=60, proc=proc, what="hub")
            self.hub_url, self.hub_key, self.hub_proc = url, key, proc
        return self.hub_url, self.hub_key

    async def agent(self, name: str, model: str, transport_args: list[str]) -> Target:
        """An agent in front of the mock engine, advertising ``model`` on the hub.

        Each hub path has its own agent and model id, so the hub never balances one
        path's requests onto another path's agent. ``max_concurrency`` is set above the
        highest concurrency measured: the hub's per-service slots would otherwise queue
        requests (default 4), which measures the configured limit, not the overhead.
        """
        engine_url = await self.engine()
        hub_url, key = await self.hub()
        config = self.procs.workdir / f"{name}.toml"
        config.write_text(
            "[[services]]\n"
            'type = "llm"\n'
            f'url = "{engine_url}"\n'
            'engine = "openai"\n'
            "max_concurrency = 256\n"
            "discover = false\n\n"
            "  [[services.models]]\n"
            f'  id = "{model}"\n'
            '  features = ["streaming"]\n'
        )
        proc = self.procs.start(
            name,
            [str(VENV_BIN / "inference-club"), "agent", "--hub", hub_url, "--key", key, "--name", name,
             "--config", str(config), "--log-level", "warning", *transport_args],
        )
        await wait_for(models_listed(self.probe, hub_url + "/v1/models", key, model),
                       timeout_s=30, proc=proc, what=name)
        assert self.engine_proc and self.hub_proc
        return Target(hub_url + "/v1", key, model, {"engine": self.engine_proc, "hub": self.hub_proc, "agent": proc})

    async def aclose(self) -> None:
        await self.probe.aclose()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


# --------------------------------------------------------------------------- the paths


async def path_direct(setup: Setup) -> Target:
    url = await setup.engine()
    assert setup.engine_proc
    return Target(url, None, ENGINE_MODEL, {"engine": setup.engine_proc})


async def path_hub_direct(setup: Setup) -> Target:
    return await setup.agent("bench-direct", "bench-model-hub-direct", ["--direct", "--listen", f"{HOST}:{free_port()}"])


async def path_hub_tunnel(setup: Setup) -> Target:
    return await setup.agent("bench-tunnel", "bench-model-hub-tunnel", [])


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


async def path_litellm(setup: Setup) -> Target:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        if not setup.install_litellm:
            raise Unavailable(f"no {_shown(LITELLM_VENV)} (run bench/litellm_venv.sh)")
        print(f"installing litellm {LITELLM_VERSION} into {_shown(LITELLM_VENV)} "
              "(minutes the first time) ...", file=sys.stderr, flush=True)
        log = setup.procs.workdir / "litellm-install.log"
        with log.open("wb") as out:
            rc = await asyncio.to_thread(
                subprocess.call, ["bash", str(BENCH_DIR / "litellm_venv.sh"), sys.executable],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        if rc != 0 or not litellm.exists():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise Unavailable(f"install failed: {lines[-1] if lines else f'status {rc}'}")
    engine_url = await setup.engine()
    port = free_port()
    master_key = "sk-bench-litellm"
    config = setup.procs.workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {ENGINE_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{ENGINE_MODEL}\n"
        f"      api_base: {engine_url}\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    proc = setup.procs.start(
        "litellm",
        [str(litellm), "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1"],
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"},
    )
    url = f"http://{HOST}:{port}/v1"
    await wait_for(models_listed(setup.probe, url + "/models", master_key, ENGINE_MODEL),
                   timeout_s=120, proc=proc, what="litellm")
    assert setup.engine_proc
    return Target(url, master_key, ENGINE_MODEL, {"engine": setup.engine_proc, "litellm": proc})


PATHS: dict[str, tuple[str, Callable[[Setup], Awaitable[Target]]]] = {
    "direct": ("client → mock engine", path_direct),
    "hub-direct": ("client → hub → agent (direct transport) → engine", path_hub_direct),
    "hub-tunnel": ("client → hub → agent (tunnel transport) → engine", path_hub_tunnel),
    "litellm": (f"client → LiteLLM proxy {LITELLM_VERSION} → engine", path_litellm),
}


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    stream: bool


SCENARIOS = (
    Scenario("chat c=1", 1, False),
    Scenario("chat c=16", 16, False),
    Scenario("chat c=64", 64, False),
    Scenario("stream c=1", 1, True),
    Scenario("stream c=16", 16, True),
)


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


class BadAnswer(Exception):
    pass


async def one_chat(client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str]) -> None:
    r = await client.post(target.base_url + "/chat/completions", content=body, headers=headers)
    if r.status_code != 200:
        raise BadAnswer(f"HTTP {r.status_code}: {r.text[:200]}")
    if not r.content.startswith(b"{") or b'"choices"' not in r.content:
        raise BadAnswer(f"unexpected body: {r.content[:200]!r}")


async def one_stream(
    client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str], t0: float
) -> float:
    """Read one stream; return the time of its first SSE data line (``perf_counter``)."""
    first: float | None = None
    chunks = 0
    done = False
    buf = b""
    async with client.stream("POST", target.base_url + "/chat/completions", content=body, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            raise BadAnswer(f"HTTP {r.status_code}: {r.text[:200]}")
        async for raw in r.aiter_raw():
            buf += raw
            *lines, buf = buf.split(b"\n")  # split on \n only (not U+2028 and friends)
            for line in lines:
                line = line.rstrip(b"\r")
                if not line.startswith(b"data:"):
                    continue
                if first is None:
                    first = time.perf_counter()
                if line[5:].strip() == b"[DONE]":
                    done = True
                else:
                    chunks += 1
    if not done:
        raise BadAnswer(f"stream ended without [DONE] after {chunks} chunks")
    if chunks < STREAM_CHUNKS:
        raise BadAnswer(f"stream had {chunks} data chunks, expected at least {STREAM_CHUNKS}")
    assert first is not None
    return first - t0


async def run_load(
    clients: list[httpx.AsyncClient], target: Target, scenario: Scenario, *, requests: int, warmup: int, max_s: float
) -> Result:
    """Send ``requests`` requests from ``scenario.concurrency`` workers (after a warm-up).

    Worker ``i`` uses ``clients[i % len(clients)]``. Also records the CPU time each
    serving process and this load generator used during the measured phase.
    """
    payload = {"model": target.model, "messages": MESSAGES, "max_tokens": 32}
    if scenario.stream:
        payload["stream"] = True
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    if target.key:
        headers["authorization"] = f"Bearer {target.key}"

    async def phase(count: int, record: Result | None, deadline: float) -> None:
        left = count

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal left
            while left > 0 and time.perf_counter() < deadline:
                left -= 1
                t0 = time.perf_counter()
                try:
                    if scenario.stream:
                        ttfb = await one_stream(client, target, body, headers, t0)
                    else:
                        await one_chat(client, target, body, headers)
                        ttfb = 0.0
                except (httpx.HTTPError, BadAnswer) as exc:
                    if record is not None:
                        record.errors += 1
                        record.first_error = record.first_error or f"{type(exc).__name__}: {exc}"
                    continue
                if record is not None:
                    record.latencies.append(time.perf_counter() - t0)
                    if scenario.stream:
                        record.ttfb.append(ttfb)

        await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(scenario.concurrency)))

    await phase(warmup, None, time.perf_counter() + max_s)
    result = Result()
    cpu_before = {role: group_cpu_s(proc.popen.pid) for role, proc in target.procs.items()}
    client_before = time.process_time()
    start = time.perf_counter()
    await phase(requests, result, start + max_s)
    result.wall_s = time.perf_counter() - start
    result.cpu_s = {role: group_cpu_s(proc.popen.pid) - cpu_before[role] for role, proc in target.procs.items()}
    result.cpu_s["client"] = time.process_time() - client_before
    return result


# --------------------------------------------------------------------------- report


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
                cells += [fmt(t50 - b_t50, 2), fmt(p50 - b50, 2), fmt(p50 / b50, 2) + "x",
                          fmt(res.rps / base.rps, 2) + "x"]
            else:
                cells += ["—"] * 4
        else:
            cells += [fmt(p50, 2), fmt(p99, 2), fmt(res.rps, 0)]
            if base is not None:
                b50, b99 = pct(base.latencies, 50), pct(base.latencies, 99)
                cells += [fmt(p50 - b50, 2), fmt(p99 - b99, 2), fmt(p50 / b50, 2) + "x",
                          fmt(res.rps / base.rps, 2) + "x"]
            else:
                cells += ["—"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    errors = [f"- {name}: {res.errors} errors, first: `{res.first_error}`"
              for name, res in rows.items() if isinstance(res, Result) and res.errors]
    if errors:
        lines += ["", *errors]
    return "\n".join(lines)


CPU_ROLES = ("engine", "hub", "agent", "litellm", "client")


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
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "inference_club"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.splitlines()
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


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="ic-bench-"))
    procs = Processes(workdir)
    setup = Setup(procs, install_litellm=not args.no_litellm)
    names = [p for p in args.paths if not (args.no_litellm and p == "litellm")]
    targets: dict[str, Target | str] = {}
    results: dict[Scenario, dict[str, Result | str]] = {s: {} for s in SCENARIOS}
    clients: dict[str, list[httpx.AsyncClient]] = {}
    started = time.monotonic()
    load_before = load_average()
    failed = True
    try:
        for name in names:
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            try:
                targets[name] = await PATHS[name][1](setup)
            except Unavailable as exc:
                targets[name] = str(exc)
                print(f"  {name}: unavailable: {exc}", file=sys.stderr, flush=True)
        max_c = max(s.concurrency for s in SCENARIOS)
        shards = -(-max_c // CONNECTIONS_PER_CLIENT)
        for name, target in targets.items():
            if isinstance(target, Target):
                clients[name] = [
                    httpx.AsyncClient(
                        trust_env=False,
                        timeout=httpx.Timeout(30.0),
                        limits=httpx.Limits(max_connections=CONNECTIONS_PER_CLIENT,
                                            max_keepalive_connections=CONNECTIONS_PER_CLIENT,
                                            keepalive_expiry=120),
                    )
                    for _ in range(shards)
                ]
        for scenario in SCENARIOS:
            n = args.requests if scenario.concurrency == 1 else args.requests * 2
            for name, target in targets.items():
                if isinstance(target, str):
                    results[scenario][name] = target
                    continue
                res = await run_load(clients[name], target, scenario, requests=n,
                                     warmup=max(20, 2 * scenario.concurrency), max_s=args.max_seconds)
                results[scenario][name] = res
                print(f"{scenario.name:12} {name:11} n={res.done:5} err={res.errors} "
                      f"p50={pct(res.latencies, 50):7.2f} ms p99={pct(res.latencies, 99):7.2f} ms "
                      f"{res.rps:7.0f} req/s", file=sys.stderr, flush=True)
        failed = False
    finally:
        for pool in clients.values():
            for client in pool:
                await client.aclose()
        await setup.aclose()
        procs.stop_all()
        if failed or args.keep_logs:
            print(f"process logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    load_after = load_average()

    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/bench.py", *sys.argv[1:]])
    out = [
        "# Benchmark results",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        *machine(),
        f"- Code: {code_version()}",
        f"- Command: `{command}` ({elapsed:.0f} s)",
        f"- Requests per path: {args.requests} at c=1, {args.requests * 2} at c=16/64 (after a warm-up; "
        f"a scenario stops early after {args.max_seconds:.0f} s); streams are {STREAM_CHUNKS} content chunks.",
        f"- Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.",
        "- Every process (load client, engine, hub, agent, LiteLLM) shares the same cores; "
        "compare rows of one run only (±30 % between runs).",
        f"- The load generator is httpx: per path, {shards} pooled clients of {CONNECTIONS_PER_CLIENT} "
        "connections each, worker i using client i mod "
        f"{shards} (httpx's pool costs CPU in proportion to its size on every request).",
        "",
        "Paths:",
        "",
        *(f"- `{name}`: {PATHS[name][0]}" + (f" — unavailable: {t}" if isinstance(t, str) else "")
          for name, t in targets.items()),
        "",
        "\"added\" = p50 (or p99) of the path minus the same of `direct`; \"x\" = ratio to `direct`.",
        "",
    ]
    for scenario in SCENARIOS:
        out += [table(scenario, results[scenario]), ""]
    out += [cpu_table(results), ""]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500,
                        help="measured requests per path at c=1 (twice that at c=16/64; default 500)")
    parser.add_argument("--paths", default="direct,hub-direct,hub-tunnel,litellm",
                        help=f"comma-separated, from: {', '.join(PATHS)} (default: all)")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (no install, no row)")
    parser.add_argument("--max-seconds", type=float, default=20.0,
                        help="stop a scenario of one path after this long (default 20)")
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (temp dir)")
    args = parser.parse_args(argv)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown path(s): {', '.join(unknown)}; known: {', '.join(PATHS)}")
    if "direct" not in args.paths:
        args.paths.insert(0, "direct")  # the baseline every ratio needs
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # A SIGTERM ends the run like Ctrl-C does, so the finally-blocks stop every child.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        import uvloop

        runner: Callable[..., str] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        report = runner(run(args))
    except KeyboardInterrupt:
        print("interrupted; every process started here was stopped", file=sys.stderr)
        sys.exit(130)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
        print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
