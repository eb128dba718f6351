"""Measure what the hub adds to a chat completion, against a direct call and LiteLLM.

One run starts a fast mock engine (``bench/mock_engine.py``), a hub with a throwaway
SQLite data dir, one agent per hub path, and optionally a LiteLLM proxy in its own
venv, all on 127.0.0.1. Then, scenario by scenario, it measures every path back to
back with an ``httpx.AsyncClient`` load generator (one pooled client per path):

- ``chat c=1``, ``chat c=16``, ``chat c=64``: non-streaming chat completions;
- ``stream c=1``, ``stream c=16``: streamed chat completions, timing both the first
  SSE ``data:`` line (TTFB) and the whole stream up to ``data: [DONE]``.

Each table gives p50/p99 latency, requests per second, and ratios to ``direct`` from
the same run. The ``floor`` path puts two byte-copying forwarders (``bench/forwarder.py``)
where the hub and the agent stand: what two more processes cost with no work of their own. Every process started here is stopped at the end, also on errors.

Usage::

    .venv/bin/python bench/bench.py [--requests N] [--paths direct,floor,hub-direct,litellm]
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
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from processes import (  # bench/ is a directory of scripts: the sibling module
    Proc,
    Processes,
    Unavailable,
    free_port,
    group_cpu_s,
    load_average,
    models_listed,
    read_first_line,
    wait_for,
)
from report import (  # the sibling module
    Result,
    Scenario,
    code_version,
    cpu_table,
    machine,
    pct,
    table,
)

from inference_club.netpool import TRANSPORT_VARIABLE, transport_kind

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


# --------------------------------------------------------------------------- the setup


@dataclass
class Target:
    """Where a path sends its requests."""

    base_url: str  # ends with /v1
    key: str | None
    model: str
    procs: dict[str, Proc] = field(default_factory=dict)  # role -> the process serving it


Wrap = Callable[[str, list[str]], list[str]]
"""A process's role (``hub``, ``agent``) and command → the command to run instead."""


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
    wrap: Wrap | None = None
    """Rewrites the command of the hub (role ``hub``) and of each agent (``agent``) before
    it starts: ``bench/instructions.py`` runs them under callgrind."""

    def _command(self, role: str, argv: list[str]) -> list[str]:
        return argv if self.wrap is None else self.wrap(role, argv)

    async def engine(self) -> str:
        if not self.engine_url:
            self.engine_url, self.engine_proc = await self.start_engine(
                "engine", ["--chunks", str(STREAM_CHUNKS)]
            )
        return self.engine_url

    async def start_engine(self, name: str, options: list[str]) -> tuple[str, Proc]:
        """One more mock engine process; returns its ``/v1`` URL."""
        port, proc = await self.start_listener(
            name,
            [
                sys.executable,
                str(BENCH_DIR / "mock_engine.py"),
                "--host",
                HOST,
                "--port",
                "0",
                "--model",
                ENGINE_MODEL,
                *options,
            ],
        )
        url = f"http://{HOST}:{port}/v1"
        await wait_for(
            models_listed(self.probe, url + "/models", None, ENGINE_MODEL),
            timeout_s=15,
            proc=proc,
            what="mock engine",
        )
        return url, proc

    async def start_listener(self, name: str, argv: list[str]) -> tuple[str, Proc]:
        """A bench process that prints ``ready <port>`` once listening: its port and process."""
        proc = self.procs.start(name, argv)
        line = await read_first_line(proc, 15)
        if not line.startswith("ready "):
            raise RuntimeError(f"{name}: unexpected first line {line!r}")
        return line.split()[1], proc

    async def hub(self) -> tuple[str, str]:
        if not self.hub_url:
            port = free_port(HOST)
            data_dir = self.procs.workdir / "hub-data"
            data_dir.mkdir()
            proc = self.procs.start(
                "hub",
                self._command(
                    "hub",
                    [
                        str(VENV_BIN / "inference-club"),
                        "serve",
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                        "--data-dir",
                        str(data_dir),
                    ],
                ),
            )
            key = await read_first_line(proc, 60)
            url = f"http://{HOST}:{port}"

            async def up() -> bool:
                return (
                    await self.probe.get(
                        url + "/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=2
                    )
                ).status_code == 200

            await wait_for(up, timeout_s=60, proc=proc, what="hub")
            self.hub_url, self.hub_key, self.hub_proc = url, key, proc
        return self.hub_url, self.hub_key

    async def agent(
        self,
        name: str,
        model: str,
        transport_args: list[str],
        *,
        engine: tuple[str, Proc] | None = None,
        max_concurrency: int = 256,
    ) -> Target:
        """An agent in front of the mock engine, advertising ``model`` on the hub.

        Each hub path has its own agent and model id, so the hub never balances one
        path's requests onto another path's agent. ``max_concurrency`` is set above the
        highest concurrency measured: the hub's per-service slots would otherwise queue
        requests (default 4), which measures the configured limit, not the overhead.
        """
        engine_url = engine[0] if engine else await self.engine()
        engine_proc = engine[1] if engine else self.engine_proc
        hub_url, key = await self.hub()
        config = self.procs.workdir / f"{name}.toml"
        config.write_text(
            "[[services]]\n"
            'type = "llm"\n'
            f'url = "{engine_url}"\n'
            'engine = "openai"\n'
            f"max_concurrency = {max_concurrency}\n"
            "discover = false\n\n"
            "  [[services.models]]\n"
            f'  id = "{model}"\n'
            '  features = ["streaming"]\n'
        )
        proc = self.procs.start(
            name,
            self._command(
                "agent",
                [
                    str(VENV_BIN / "inference-club"),
                    "agent",
                    "--hub",
                    hub_url,
                    "--key",
                    key,
                    "--name",
                    name,
                    "--config",
                    str(config),
                    "--log-level",
                    "warning",
                    *transport_args,
                ],
            ),
        )
        await wait_for(
            models_listed(self.probe, hub_url + "/v1/models", key, model), timeout_s=30, proc=proc, what=name
        )
        assert engine_proc and self.hub_proc
        return Target(
            hub_url + "/v1", key, model, {"engine": engine_proc, "hub": self.hub_proc, "agent": proc}
        )

    async def aclose(self) -> None:
        await self.probe.aclose()


# --------------------------------------------------------------------------- the paths


async def path_direct(setup: Setup) -> Target:
    url = await setup.engine()
    assert setup.engine_proc
    return Target(url, None, ENGINE_MODEL, {"engine": setup.engine_proc})


async def path_floor(setup: Setup) -> Target:
    url = await setup.engine()
    assert setup.engine_proc
    return await floor_in_front(setup, "", url, setup.engine_proc)


async def floor_in_front(setup: Setup, name: str, engine_url: str, engine_proc: Proc) -> Target:
    """Two byte-copying forwarders (``bench/forwarder.py``) where the hub and the agent stand."""
    target = engine_url.split("//", 1)[1].split("/", 1)[0]
    procs: dict[str, Proc] = {"engine": engine_proc}
    for role in ("fwd-2", "fwd-1"):  # the one nearest the engine first
        port, procs[role] = await setup.start_listener(
            f"forwarder{name}-{role}", [sys.executable, str(BENCH_DIR / "forwarder.py"), "--target", target]
        )
        target = f"{HOST}:{port}"
    return Target(f"http://{target}/v1", None, ENGINE_MODEL, procs)


async def path_hub_direct(setup: Setup) -> Target:
    return await setup.agent(
        "bench-direct", "bench-model-hub-direct", ["--direct", "--listen", f"{HOST}:{free_port(HOST)}"]
    )


async def path_hub_tunnel(setup: Setup) -> Target:
    return await setup.agent("bench-tunnel", "bench-model-hub-tunnel", [])


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


async def path_litellm(setup: Setup) -> Target:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        if not setup.install_litellm:
            raise Unavailable(f"no {_shown(LITELLM_VENV)} (run bench/litellm_venv.sh)")
        print(
            f"installing litellm {LITELLM_VERSION} into {_shown(LITELLM_VENV)} (minutes the first time) ...",
            file=sys.stderr,
            flush=True,
        )
        log = setup.procs.workdir / "litellm-install.log"
        with log.open("wb") as out:
            rc = await asyncio.to_thread(
                subprocess.call,
                ["bash", str(BENCH_DIR / "litellm_venv.sh"), sys.executable],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if rc != 0 or not litellm.exists():
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
            raise Unavailable(f"install failed: {lines[-1] if lines else f'status {rc}'}")
    engine_url = await setup.engine()
    port = free_port(HOST)
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
    await wait_for(
        models_listed(setup.probe, url + "/models", master_key, ENGINE_MODEL),
        timeout_s=120,
        proc=proc,
        what="litellm",
    )
    assert setup.engine_proc
    return Target(url, master_key, ENGINE_MODEL, {"engine": setup.engine_proc, "litellm": proc})


PATHS: dict[str, tuple[str, Callable[[Setup], Awaitable[Target]]]] = {
    "direct": ("client → mock engine", path_direct),
    "floor": ("client → forwarder → forwarder → engine (two processes that only copy bytes)", path_floor),
    "hub-direct": ("client → hub → agent (direct transport) → engine", path_hub_direct),
    "hub-tunnel": ("client → hub → agent (tunnel transport) → engine", path_hub_tunnel),
    "litellm": (f"client → LiteLLM proxy {LITELLM_VERSION} → engine", path_litellm),
}


# --------------------------------------------------------------------------- load


SCENARIOS = (
    Scenario("chat c=1", 1, False),
    Scenario("chat c=16", 16, False),
    Scenario("chat c=64", 64, False),
    Scenario("chat c=256", 256, False),
    Scenario("stream c=1", 1, True),
    Scenario("stream c=16", 16, True),
    Scenario("stream c=256", 256, True),
)


class BadAnswer(Exception):
    pass


async def one_chat(client: httpx.AsyncClient, target: Target, body: bytes, headers: dict[str, str]) -> None:
    r = await client.post(target.base_url + "/chat/completions", content=body, headers=headers)
    if r.status_code != 200:
        raise BadAnswer(f"HTTP {r.status_code}: {r.text[:200]}")
    if not r.content.startswith(b"{") or b'"choices"' not in r.content:
        raise BadAnswer(f"unexpected body: {r.content[:200]!r}")


async def one_stream(
    client: httpx.AsyncClient,
    target: Target,
    body: bytes,
    headers: dict[str, str],
    t0: float,
    expected: int = STREAM_CHUNKS,
) -> float:
    """Read one stream; return the time of its first SSE data line (``perf_counter``)."""
    first: float | None = None
    chunks = 0
    done = False
    buf = b""
    async with client.stream(
        "POST", target.base_url + "/chat/completions", content=body, headers=headers
    ) as r:
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
    if chunks < expected:
        raise BadAnswer(f"stream had {chunks} data chunks, expected at least {expected}")
    assert first is not None
    return first - t0


async def run_load(
    clients: list[httpx.AsyncClient],
    target: Target,
    scenario: Scenario,
    *,
    requests: int,
    warmup: int,
    max_s: float,
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
    result.cpu_s = {
        role: group_cpu_s(proc.popen.pid) - cpu_before[role] for role, proc in target.procs.items()
    }
    result.cpu_s["client"] = time.process_time() - client_before
    return result


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="ic-bench-"))
    procs = Processes(workdir)
    setup = Setup(procs, install_litellm=not args.no_litellm)
    names = [p for p in args.paths if not (args.no_litellm and p == "litellm")]
    targets: dict[str, Target | str] = {}
    scenarios: list[Scenario] = args.scenarios
    results: dict[Scenario, dict[str, Result | str]] = {s: {} for s in scenarios}
    clients: dict[str, list[httpx.AsyncClient]] = {}
    started = time.monotonic()
    load_before = load_average()
    scale_report = ""
    failed = True
    try:
        for name in names:
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            try:
                targets[name] = await PATHS[name][1](setup)
            except Unavailable as exc:
                targets[name] = str(exc)
                print(f"  {name}: unavailable: {exc}", file=sys.stderr, flush=True)
        max_c = max(s.concurrency for s in scenarios)
        shards = -(-max_c // CONNECTIONS_PER_CLIENT)
        for name, target in targets.items():
            if isinstance(target, Target):
                clients[name] = [
                    httpx.AsyncClient(
                        trust_env=False,
                        timeout=httpx.Timeout(30.0),
                        limits=httpx.Limits(
                            max_connections=CONNECTIONS_PER_CLIENT,
                            max_keepalive_connections=CONNECTIONS_PER_CLIENT,
                            keepalive_expiry=120,
                        ),
                    )
                    for _ in range(shards)
                ]
        for scenario in scenarios:
            n = args.requests if scenario.concurrency == 1 else args.requests * 2
            for name, target in targets.items():
                if isinstance(target, str):
                    results[scenario][name] = target
                    continue
                res = await run_load(
                    clients[name],
                    target,
                    scenario,
                    requests=n,
                    warmup=max(20, 2 * scenario.concurrency),
                    max_s=args.max_seconds,
                )
                results[scenario][name] = res
                print(
                    f"{scenario.name:12} {name:11} n={res.done:5} err={res.errors} "
                    f"p50={pct(res.latencies, 50):7.2f} ms p99={pct(res.latencies, 99):7.2f} ms "
                    f"{res.rps:7.0f} req/s",
                    file=sys.stderr,
                    flush=True,
                )
        if args.scale and "hub-tunnel" in names:
            import scale

            try:
                print("starting the scale scenarios ...", file=sys.stderr, flush=True)
                direct, floor, scale_target = await scale.scale_targets(
                    setup, chunks=args.scale_chunks, delay_ms=args.scale_delay_ms, streams=args.scale_streams
                )
            except Unavailable as exc:
                scale_report = scale.report(str(exc), str(exc))
            else:
                bursts = (
                    ("direct", direct, None),
                    ("floor", floor, None),
                    ("hub-tunnel", scale_target, None),
                    ("floor", floor, 1),
                    ("hub-tunnel", scale_target, 1),
                )
                rounds: list[list[scale.StreamsResult]] = [[] for _ in bursts]
                for turn in range(args.scale_rounds):
                    for runs, (path, target, max_tokens) in zip(rounds, bursts, strict=True):
                        result = await scale.run_streams(
                            path,
                            target,
                            streams=args.scale_streams,
                            chunks=args.scale_chunks,
                            delay_ms=args.scale_delay_ms,
                            max_tokens=max_tokens,
                        )
                        runs.append(result)
                        print(
                            f"round {turn + 1}: {args.scale_streams} streams of {result.chunks} chunks, "
                            f"{path}: errors={result.errors} TTFB p99={pct(result.ttfb, 99):.0f} ms",
                            file=sys.stderr,
                            flush=True,
                        )
                streams = [scale.median_round(runs) for runs in rounds]
                watchers = await scale.run_watchers(scale_target, watchers=args.watchers)
                print(
                    f"{args.watchers} watchers: connected={watchers.connected} errors={watchers.errors} "
                    f"RSS {watchers.rss_connected:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
                scale_report = scale.report(streams, watchers)
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
        f"- Requests per path: {args.requests} at c=1, {args.requests * 2} at c=16/64/256 (after a warm-up; "
        f"a scenario stops early after {args.max_seconds:.0f} s); streams are {STREAM_CHUNKS} content chunks.",
        f"- Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.",
        f"- HTTP transport of the hub and the agents: `{TRANSPORT_VARIABLE}={transport_kind()}`.",
        "- Every process (load client, engine, hub, agent, LiteLLM) shares the same cores; "
        "compare rows of one run only (±30 % between runs).",
        f"- The load generator is httpx: per path, {shards} pooled clients of {CONNECTIONS_PER_CLIENT} "
        "connections each, worker i using client i mod "
        f"{shards} (httpx's pool costs CPU in proportion to its size on every request).",
        "",
        "Paths:",
        "",
        *(
            f"- `{name}`: {PATHS[name][0]}" + (f" — unavailable: {t}" if isinstance(t, str) else "")
            for name, t in targets.items()
        ),
        "",
        '"added" = p50 (or p99) of the path minus the same of `direct`; "x" = ratio to `direct`. '
        "`floor` adds what two more processes on the path cost on this machine with no work of "
        "their own (wake-ups, reads, writes): the part of the hub paths' added time a relay "
        "cannot take away.",
        "",
    ]
    for scenario in scenarios:
        out += [table(scenario, results[scenario]), ""]
    out += [cpu_table(results), ""]
    if scale_report:
        out += [scale_report, ""]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=500,
        help="measured requests per path at c=1 (twice that at c=16/64/256; default 500)",
    )
    parser.add_argument(
        "--paths",
        default="direct,floor,hub-direct,hub-tunnel,litellm",
        help=f"comma-separated, from: {', '.join(PATHS)} (default: all)",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (no install, no row)")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help=f"comma-separated, from: {', '.join(s.name for s in SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="stop a scenario of one path after this long (default 20)",
    )
    parser.add_argument("--out", type=Path, help="also write the report (Markdown) to this file")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (temp dir)")
    parser.add_argument(
        "--no-scale",
        dest="scale",
        action="store_false",
        help="skip the scale scenarios (many streams through one tunnel, idle watchers)",
    )
    parser.add_argument(
        "--scale-streams", type=int, default=1000, help="concurrent streams through one tunnel"
    )
    parser.add_argument(
        "--scale-chunks", type=int, default=50, help="chunks per stream in the scale scenario"
    )
    parser.add_argument("--scale-delay-ms", type=float, default=20.0, help="pause between those chunks")
    parser.add_argument(
        "--scale-rounds",
        type=int,
        default=5,
        help="rounds of the bursts; the report shows each burst's round of median TTFB p99",
    )
    parser.add_argument("--watchers", type=int, default=5000, help="idle job-event watchers")
    args = parser.parse_args(argv)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown path(s): {', '.join(unknown)}; known: {', '.join(PATHS)}")
    if "direct" not in args.paths:
        args.paths.insert(0, "direct")  # the baseline every ratio needs
    by_name = {s.name: s for s in SCENARIOS}
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown or not names:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(by_name)}")
    args.scenarios = [by_name[n] for n in names]
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


HUB_PATHS = ("hub-direct", "hub-tunnel")


@contextlib.asynccontextmanager
async def tool_run(prefix: str) -> AsyncIterator[tuple[Setup, list[httpx.AsyncClient]]]:
    """For the tools beside this one: the bench's processes (started by path as asked)
    and two load-generating clients; all stopped and closed when the block ends."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    procs = Processes(workdir)
    setup = Setup(procs, install_litellm=False)
    limits = httpx.Limits(
        max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT
    )
    clients = [
        httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30.0), limits=limits) for _ in range(2)
    ]
    try:
        yield setup, clients
    finally:
        for client in clients:
            await client.aclose()
        await setup.aclose()
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_scenarios(parser: argparse.ArgumentParser, text: str) -> list[Scenario]:
    """The comma-separated scenarios of ``text``, by name (for the tools beside this one)."""
    by_name = {s.name: s for s in SCENARIOS}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        parser.error(f"unknown scenario: {', '.join(unknown)} (known: {', '.join(by_name)})")
    return [by_name[n] for n in names]


def parse_hub_paths(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The comma-separated hub paths of ``text`` (for the tools beside this one)."""
    paths = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in paths if p not in HUB_PATHS]
    if bad:
        parser.error(f"not a hub path: {', '.join(bad)}")
    return paths


def run_main(main: Coroutine[Any, Any, str]) -> str:
    """Run ``main`` on uvloop where it is installed, as the hub and the agent run; a
    SIGTERM ends it like Ctrl-C does, so the finally-blocks stop every child."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report = run_main(run(args))
    except KeyboardInterrupt:
        print("interrupted; every process started here was stopped", file=sys.stderr)
        sys.exit(130)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
        print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
