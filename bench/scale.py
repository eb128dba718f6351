"""Scale scenarios of ``bench/bench.py``: many slow streams through one tunnel, many idle watchers.

- **Streams through one tunnel**: ``--scale-streams`` (1,000) streamed chat completions
  at once through the hub and one tunnel agent, each ``--scale-chunks`` (50) chunks
  ``--scale-delay-ms`` (20 ms) apart from a mock engine of their own. Recorded: errors,
  TTFB p50/p99, stream time p50/p99, the hub's RSS before, at its peak and after, and
  the hub's and the agent's CPU. The same burst once more with one chunk a stream
  (``max_tokens: 1``) tells a stream's start from its chunks: the hub's CPU per start,
  and per chunk beyond it.
- **Idle job-event watchers**: one async job kept running (its engine holds the
  answer), then ``--watchers`` (5,000) clients on ``GET /v1/jobs/{id}/events``, each
  waiting for its first event and then idle. Recorded: the hub's RSS before and with
  every watcher connected, the CPU the hub used to accept them, and its CPU per second
  while they sit idle.

Both run after the latency scenarios, on the same hub; the loads are generated in this
process, both on raw sockets, one connection each (the streams with
:mod:`stream_client`): httpx's cost per connection would otherwise be the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from processes import group_cpu_s  # sibling modules of bench/
from report import fmt, pct
from stream_client import StreamEndpoint, StreamFailed, read_stream

from inference_club.waiting import wait_event

if TYPE_CHECKING:
    from bench import Setup, Target

SCALE_MODEL = "bench-model-scale"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class StreamsResult:
    path: str
    streams: int
    chunks: int
    delay_ms: float
    max_tokens: int | None = None
    ttfb: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    wall_s: float = 0.0
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds per process role during the measured phase (``client``: this process)."""
    round_p99s: list[float] = field(default_factory=list)
    """TTFB p99 (ms) of every round of this burst, in their order (see :func:`median_round`)."""


def median_round(runs: list[StreamsResult]) -> StreamsResult:
    """The round of median TTFB p99 of one burst, with every round's p99 and the errors of all.

    The same burst's p99 moves by up to 5x between rounds here with no hub on the path
    (``floor``): at times a batch of streams gets its first byte up to a second late,
    all together. One round is the luck of the draw; the median of several is the burst.
    The RSS columns span all rounds: before the first, the highest peak, after the last.
    """
    ordered = sorted(runs, key=lambda run: pct(run.ttfb, 99) if run.ttfb else float("inf"))
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.round_p99s = [pct(run.ttfb, 99) for run in runs]
    chosen.errors = sum(run.errors for run in runs)
    chosen.first_error = next((run.first_error for run in runs if run.first_error), "")
    chosen.rss_before = runs[0].rss_before
    chosen.rss_peak = max(run.rss_peak for run in runs)
    chosen.rss_after = runs[-1].rss_after
    return chosen


@dataclass
class WatchersResult:
    watchers: int
    connected: int = 0
    errors: int = 0
    first_error: str = ""
    connect_s: float = 0.0
    rss_before: float = 0.0
    rss_connected: float = 0.0
    connect_cpu_s: float = 0.0
    idle_s: float = 0.0
    idle_cpu_s: float = 0.0


async def _sample_peak(pid: int, box: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError, ValueError):
            box[0] = max(box[0], rss_mb(pid))
        await wait_event(stop, 0.2)


async def scale_targets(
    setup: Setup, *, chunks: int, delay_ms: float, streams: int
) -> tuple[Target, Target, Target]:
    """A slow mock engine of its own (answers held 10 min), and a tunnel agent in front of it.

    Returns the engine itself (the baseline: the same streams with no hub in between), the
    engine behind two byte-copying forwarders (the ``floor`` path: what any two processes
    in the hub's and the agent's places cost at least), and the path through the hub.
    """
    import bench

    engine = await setup.start_engine(
        "engine-scale",
        ["--chunks", str(chunks), "--chunk-delay-ms", str(delay_ms), "--answer-delay-s", "600"],
    )
    direct = bench.Target(engine[0], None, bench.ENGINE_MODEL, {"engine": engine[1]})
    floor = await bench.floor_in_front(setup, "-scale", *engine)
    through_hub = await setup.agent(
        "bench-scale", SCALE_MODEL, [], engine=engine, max_concurrency=streams + 64
    )
    through_hub.procs["engine"] = engine[1]
    return direct, floor, through_hub


async def run_streams(
    path: str, target: Target, *, streams: int, chunks: int, delay_ms: float, max_tokens: int | None = None
) -> StreamsResult:
    """``streams`` streams at once; with ``max_tokens`` below ``chunks``, that many chunks each."""
    import bench

    if max_tokens is not None and max_tokens < chunks:
        chunks = max_tokens
    result = StreamsResult(path, streams, chunks, delay_ms, max_tokens)
    payload: dict[str, object] = {"model": target.model, "messages": bench.MESSAGES, "stream": True}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    headers = {"content-type": "application/json"}
    if target.key:
        headers["authorization"] = f"Bearer {target.key}"
    endpoint = StreamEndpoint.for_post(
        target.base_url + "/chat/completions", json.dumps(payload).encode(), headers
    )
    pids = {role: proc.popen.pid for role, proc in target.procs.items()}
    hub = pids.get("hub")

    async def one() -> None:
        try:
            ttfb, total = await read_stream(endpoint, expected=chunks, timeout_s=300.0)
        except (OSError, StreamFailed) as exc:
            result.errors += 1
            result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
            return
        result.ttfb.append(ttfb)
        result.latencies.append(total)

    await asyncio.gather(*(one() for _ in range(16)))  # warm-up: the tunnel, the agent's pool
    result.errors, result.first_error, result.ttfb, result.latencies = 0, "", [], []
    stop = asyncio.Event()
    peak = [0.0]
    sampler = None
    if hub is not None:
        result.rss_before = peak[0] = rss_mb(hub)
        sampler = asyncio.create_task(_sample_peak(hub, peak, stop))
    cpu = {role: group_cpu_s(pid) for role, pid in pids.items()}
    client_cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(streams)))
    result.wall_s = time.perf_counter() - start
    result.cpu_s = {role: group_cpu_s(pid) - cpu[role] for role, pid in pids.items()}
    result.cpu_s["client"] = time.process_time() - client_cpu
    stop.set()
    if sampler is not None and hub is not None:
        await sampler
        result.rss_peak = peak[0]
        result.rss_after = rss_mb(hub)
    return result


async def _watch(host: str, port: int, request: bytes) -> tuple[asyncio.StreamWriter | None, str]:
    """Open one event stream and wait for its first event; the connection stays open."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        async with asyncio.timeout(120):
            head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            writer.close()
            return None, head.split(b"\r\n", 1)[0].decode(errors="replace")
        async with asyncio.timeout(120):
            await reader.readuntil(b"event: status")
        return writer, ""
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


async def run_watchers(target: Target, *, watchers: int, idle_s: float = 10.0) -> WatchersResult:
    import bench

    result = WatchersResult(watchers)
    hub = target.procs["hub"].popen.pid
    base = target.base_url  # http://host:port/v1
    host, port = base.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    auth = {"authorization": f"Bearer {target.key}"}
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        r = await client.post(
            base + "/chat/completions",
            headers=auth,
            json={"model": target.model, "messages": bench.MESSAGES, "async": True},
        )
        if r.status_code != 202:
            result.errors, result.first_error = (
                watchers,
                f"job not accepted: HTTP {r.status_code} {r.text[:200]}",
            )
            return result
        job_id = r.json()["id"]
        request = (
            f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"authorization: Bearer {target.key}\r\naccept: text/event-stream\r\n\r\n"
        ).encode()
        writers: list[asyncio.StreamWriter] = []
        try:
            result.rss_before = rss_mb(hub)
            cpu0 = group_cpu_s(hub)
            start = time.perf_counter()
            # Opened in waves, as a crowd of clients would, not in one burst of SYNs.
            for offset in range(0, watchers, 250):
                opened = await asyncio.gather(
                    *(_watch(host, int(port), request) for _ in range(min(250, watchers - offset)))
                )
                for writer, error in opened:
                    if writer is not None:
                        writers.append(writer)
                    else:
                        result.errors += 1
                        result.first_error = result.first_error or error
            result.connect_s = time.perf_counter() - start
            result.connected = len(writers)
            cpu1 = group_cpu_s(hub)
            result.connect_cpu_s = cpu1 - cpu0
            await asyncio.sleep(idle_s)
            result.idle_s = idle_s
            result.idle_cpu_s = group_cpu_s(hub) - cpu1
            result.rss_connected = rss_mb(hub)
        finally:
            for writer in writers:
                writer.close()
            with contextlib.suppress(httpx.HTTPError):
                await client.post(f"{base}/jobs/{job_id}/cancel", headers=auth)
    return result


def report(streams: list[StreamsResult] | str | None, watchers: WatchersResult | str | None) -> str:
    lines = ["### Scale: slow streams through one tunnel, idle job-event watchers", ""]
    if isinstance(streams, str):
        lines += [f"- Streams: unavailable: {streams}", ""]
    elif streams:
        first = streams[0]
        # The burst with one chunk a stream, if run: what a start costs the hub.
        starts = next((s for s in streams if s.max_tokens is not None and "hub" in s.cpu_s), None)
        start_ms = 1000 * starts.cpu_s["hub"] / max(1, len(starts.latencies)) if starts else None
        lines += [
            f"{first.streams:,} streamed chat completions at once, each {first.chunks} chunks "
            f"{first.delay_ms:g} ms apart (a stream alone takes ~{first.chunks * first.delay_ms / 1000:.1f} s): "
            "straight to the mock engine (`direct`: load generator and engine alone), through two "
            "byte-copying forwarders where the hub and the agent stand (`floor`: a connection of "
            "its own to the next hop per stream, and no other work: what any two processes in those "
            "places cost at least on this machine), then through the hub and one tunnel agent "
            "(`hub-tunnel`); then `floor` and `hub-tunnel` once more with one chunk a stream "
            "(`max_tokens: 1`): what the starts alone cost. Each burst runs in every one of "
            f"{len(first.round_p99s) or 1} rounds; a row is its round of median TTFB p99 (every "
            "round's p99 in the next column), its errors those of all rounds, its RSS columns "
            "from before the first round to the highest peak and after the last. "
            "CPU is each process's user + system "
            "time during the phase; `client` is the load "
            "generator. Hub CPU *per event* divides by every event sent (the chunks, the first and "
            "last events and `[DONE]`), starts included; *per start* is the one-chunk burst's CPU "
            "per stream; *per chunk* is what a stream of the full burst cost beyond its start, "
            "divided by its chunks beyond the first.",
            "",
            "| path | chunks | streams | done | errors | TTFB p50 ms | TTFB p99 ms | p99 of each round ms "
            "| stream p50 s "
            "| stream p99 s | wall s | hub RSS before MB | peak MB | growth MB | after MB "
            "| CPU s: hub | agent | fwd-1 | fwd-2 | engine | client | hub CPU ms: per event | per start "
            "| per chunk |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in streams:
            done = len(s.latencies)
            hub_cpu = s.cpu_s.get("hub")
            through_hub = hub_cpu is not None
            per_chunk = ""
            if through_hub and start_ms is not None and s is not starts and s.chunks > 1 and done:
                per_chunk = f"{(1000 * (hub_cpu or 0.0) / done - start_ms) / (s.chunks - 1):.3f}"

            def cpu(role: str, s: StreamsResult = s) -> str:
                value = s.cpu_s.get(role)
                return "" if value is None else f"{value:.1f}"

            lines.append(
                f"| {s.path} | {s.chunks} | {s.streams:,} | {done:,} | {s.errors} "
                f"| {fmt(pct(s.ttfb, 50), 1)} | {fmt(pct(s.ttfb, 99), 1)} "
                f"| {', '.join(f'{p99:.0f}' for p99 in s.round_p99s)} | {fmt(pct(s.latencies, 50) / 1000, 2)} "
                f"| {fmt(pct(s.latencies, 99) / 1000, 2)} | {s.wall_s:.1f} "
                + (
                    f"| {s.rss_before:.0f} | {s.rss_peak:.0f} | {s.rss_peak - s.rss_before:.0f} "
                    f"| {s.rss_after:.0f} "
                    if through_hub
                    else "|  |  |  |  "
                )
                + f"| {cpu('hub')} | {cpu('agent')} | {cpu('fwd-1')} | {cpu('fwd-2')} | {cpu('engine')} "
                f"| {cpu('client')} "
                + (
                    f"| {1000 * (hub_cpu or 0.0) / max(1, done * (s.chunks + 3)):.3f} "
                    f"| {f'{start_ms:.2f}' if s is starts and start_ms is not None else ''} | {per_chunk} |"
                    if through_hub
                    else "|  |  |  |"
                )
            )
        lines.append("")
        for s in streams:
            if s.first_error:
                lines += [f"- {s.path}, first error: `{s.first_error}`"]
        lines.append("")
    if isinstance(watchers, str):
        lines += [f"- Watchers: unavailable: {watchers}", ""]
    elif watchers is not None:
        w = watchers
        lines += [
            f"{w.watchers:,} clients on `GET /v1/jobs/{{id}}/events` of one running job, opened in waves of "
            f"250; each waits for its first event, then all stay connected and idle for {w.idle_s:.0f} s.",
            "",
            "| watchers | connected | errors | connect s | hub RSS before MB | with all connected MB "
            "| growth MB | hub CPU to connect s | hub CPU while idle, % of a core |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {w.watchers:,} | {w.connected:,} | {w.errors} | {w.connect_s:.1f} | {w.rss_before:.0f} "
            f"| {w.rss_connected:.0f} | {w.rss_connected - w.rss_before:.0f} | {w.connect_cpu_s:.1f} "
            f"| {100 * w.idle_cpu_s / w.idle_s if w.idle_s else float('nan'):.1f} |",
            "",
        ]
        if w.errors:
            lines += [f"- first error: `{w.first_error}`", ""]
    return "\n".join(lines)
