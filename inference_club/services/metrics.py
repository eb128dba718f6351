"""The hub's Prometheus metrics: one registry per app, counted cheaply, read at scrape time.

Per request the HTTP layer and the usage recorder add to plain counters (see
:mod:`inference_club.telemetry.tally`). Everything that is state rather than events
(providers online, tunnels, capacity slots, the usage backlog, the dispatcher) is read
from the hub's services when ``/metrics`` is scraped. Jobs and workflow runs by status
come from one bounded database query, repeated at most every few seconds and never
waited on longer than the database connect timeout.

While a request runs, :attr:`HubMetrics.open_requests` holds its :class:`RequestFacts`
under its request id, so the usage record of the call it makes (user, model, provider)
reaches the request's log line without the executors knowing about HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from inference_club.domain.clock import as_utc, utcnow
from inference_club.domain.jobs import ACTIVE, TERMINAL
from inference_club.domain.workflow_spec import RunStatus
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.services.usage import Usage
from inference_club.store import jobs as jobs_q
from inference_club.store import workflows as workflows_q
from inference_club.store.tables import Job
from inference_club.telemetry.tally import Buckets, FamiliesCollector, Tally, in_out_counters
from inference_club.tunnel.traffic import Traffic

if TYPE_CHECKING:
    from inference_club.services.container import Hub

__all__ = ["HubMetrics", "RequestFacts"]

_COUNT_LIMIT = 100_000  # rows counted per status query: the gauges saturate rather than scan a huge table
_ACTIVE_RUNS = (RunStatus.RUNNING.value, RunStatus.AWAITING.value)


@dataclass(slots=True)
class RequestFacts:
    """What the request's log line says beyond the HTTP exchange itself."""

    user_id: str | None = None
    model: str | None = None
    provider_id: str | None = None


@dataclass(slots=True)
class _DatabaseView:
    jobs: dict[str, int]
    runs: dict[str, int]
    oldest_queued_age_s: float | None


class HubMetrics:
    """Counters of one app and the collectors that read the hub when scraped."""

    def __init__(self, *, refresh_s: float = 5.0) -> None:
        self.registry = CollectorRegistry()
        self.refresh_s = refresh_s
        """Scrapes within this many seconds of a database read share it."""
        self.requests = Tally(
            "ic_http_requests",
            "HTTP requests answered, by route template, method, model and status.",
            ["route", "method", "model", "status"],
        )
        self.duration = Buckets(
            "ic_http_request_duration_seconds",
            "Time from the request's arrival to the last byte of its answer, by route template.",
            ["route"],
        )
        self.request_bytes = Tally("ic_http_request_bytes", "Request body bytes received.", [])
        self.response_bytes = Tally("ic_http_response_bytes", "Response body bytes sent.", [])
        self.in_flight = 0
        self.calls = Tally(
            "ic_inference_calls",
            "Calls to providers (synchronous requests, jobs, batch "
            "items, workflow steps), by model and status.",
            ["model", "status"],
        )
        self.upstream = Buckets(
            "ic_inference_duration_seconds",
            "Time from a provider call's start to its last byte, by model.",
            ["model"],
        )
        self.ttft = Buckets(
            "ic_inference_ttft_seconds",
            "Time to the first byte of a provider's answer (time to first token when streaming), by model.",
            ["model"],
        )
        self.tokens = Tally(
            "ic_tokens",
            "Tokens engines reported, by model and direction (in: prompt, out: completion).",
            ["model", "direction"],
        )
        self.jobs_finished = Tally(
            "ic_jobs_finished", "Jobs that reached a final status in this process.", ["status"]
        )
        self.tunnel_traffic = Traffic()
        self.open_requests: dict[str, RequestFacts] = {}
        self._hub: Hub | None = None
        self._view = _DatabaseView({}, {}, None)
        self._database_up = True
        self._refreshed_at = float("-inf")
        self._refreshing: asyncio.Future[_DatabaseView] | None = None
        self.registry.register(FamiliesCollector(self._families))

    def __repr__(self) -> str:
        return f"<HubMetrics in_flight={self.in_flight} open={len(self.open_requests)} attached={self._hub is not None}>"

    def attach(self, hub: Hub) -> None:
        """Read ``hub`` when scraped, and count the calls and jobs it records."""
        self._hub = hub
        hub.usage.on_record = self.observe_usage
        hub.jobs.signals.on_change(self._job_changed)

    # Counting (request path) --------------------------------------------------------------

    def observe_usage(self, usage: Usage) -> None:
        model = usage.model or "-"
        self.calls.add((model, str(usage.status_code)))
        self.upstream.observe((model,), usage.latency_ms / 1000)
        if usage.ttft_ms is not None:
            self.ttft.observe((model,), usage.ttft_ms / 1000)
        if usage.prompt_tokens:
            self.tokens.add((model, "in"), usage.prompt_tokens)
        if usage.completion_tokens:
            self.tokens.add((model, "out"), usage.completion_tokens)
        facts = self.open_requests.get(usage.request_id)
        if facts is not None:
            facts.user_id = usage.user_id
            facts.model = usage.model
            facts.provider_id = usage.provider_id

    def _job_changed(self, job: Job) -> None:
        if job.status in TERMINAL:
            self.jobs_finished.add((str(job.status),))

    # Scraping ---------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read jobs and runs by status when the last read is older than a few seconds."""
        hub = self._hub
        if hub is None or time.monotonic() - self._refreshed_at < self.refresh_s:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(_read_database(hub))
            self._refreshing.add_done_callback(_consume)
        reading = self._refreshing
        done, _ = await asyncio.wait({reading}, timeout=hub.database.connect_timeout_s)
        if not done or reading.cancelled() or reading.exception() is not None:
            # The query keeps running (bounded by the driver's timeouts); the last view is shown.
            self._database_up = False
            return
        self._view = reading.result()
        self._database_up = True
        self._refreshed_at = time.monotonic()

    def _families(self) -> Iterator[Metric]:
        yield self.requests.family()
        yield self.duration.family()
        yield _gauge("ic_http_requests_in_flight", "HTTP requests being answered right now.", self.in_flight)
        yield self.request_bytes.family()
        yield self.response_bytes.family()
        yield self.calls.family()
        yield self.upstream.family()
        yield self.ttft.family()
        yield self.tokens.family()
        yield self.jobs_finished.family()
        hub = self._hub
        if hub is not None:
            yield from self._hub_families(hub)

    def _hub_families(self, hub: Hub) -> Iterator[Metric]:
        online = GaugeMetricFamily(
            "ic_providers_online", "Providers routable right now, by transport.", labels=["transport"]
        )
        by_transport: dict[str, int] = {"direct": 0, "tunnel": 0}
        for provider in hub.registry.online():
            by_transport[provider.transport] = by_transport.get(provider.transport, 0) + 1
        for transport, count in by_transport.items():
            online.add_metric([transport], count)
        yield online
        yield _gauge("ic_providers_known", "Providers the hub knows, online or not.", len(hub.registry.all()))

        tunnel = hub.transports.by_name.get("tunnel")
        if isinstance(tunnel, TunnelTransport):
            stats = tunnel.server.stats()
            yield _gauge("ic_tunnel_connections", "Agent tunnels open to this hub process.", stats.tunnels)
            yield _gauge("ic_tunnel_streams_open", "Requests in flight over tunnels.", stats.streams)
            yield _gauge(
                "ic_tunnel_buffered_bytes",
                "Answer bytes received over tunnels and not yet read.",
                stats.buffered_bytes,
            )
        yield from in_out_counters(
            "ic_tunnel", "over agent tunnels, by direction as the hub sees it", self.tunnel_traffic.families()
        )

        in_use = GaugeMetricFamily(
            "ic_capacity_slots_in_use",
            "Capacity slots taken, by provider and service index.",
            labels=["provider", "service"],
        )
        limit = GaugeMetricFamily(
            "ic_capacity_slots_limit",
            "Capacity slots (max_concurrency), by provider and service index.",
            labels=["provider", "service"],
        )
        for (provider_id, index), (used, most) in hub.capacity.snapshot().items():
            in_use.add_metric([provider_id, str(index)], used)
            limit.add_metric([provider_id, str(index)], most)
        yield in_use
        yield limit
        yield _gauge(
            "ic_capacity_waiting", "Synchronous requests waiting for a capacity slot.", hub.capacity.waiting
        )

        view = self._view
        jobs = GaugeMetricFamily(
            "ic_jobs", "Jobs queued or processing (whole hub; read from the database).", labels=["status"]
        )
        for status in sorted(ACTIVE):
            jobs.add_metric([str(status)], view.jobs.get(str(status), 0))
        yield jobs
        yield _gauge(
            "ic_dispatcher_lag_seconds",
            "Age of the oldest queued job (0 when none waits).",
            view.oldest_queued_age_s or 0.0,
        )
        pulse = hub.dispatcher.pulse()
        last_tick = pulse.get("last_tick")
        yield _gauge(
            "ic_dispatcher_last_pass_age_seconds",
            "Seconds since this process's dispatcher last looked at the queue.",
            0.0 if last_tick is None else max(0.0, time.time() - last_tick),
        )
        yield _gauge("ic_dispatcher_running", "Jobs this process runs right now.", pulse.get("running", 0))
        runs = GaugeMetricFamily(
            "ic_workflow_runs",
            "Workflow runs running or awaiting a gate (whole hub; read from the database).",
            labels=["status"],
        )
        for status in _ACTIVE_RUNS:
            runs.add_metric([status], view.runs.get(status, 0))
        yield runs
        yield _gauge(
            "ic_usage_backlog", "Usage rows waiting to be written to the database.", hub.usage.pending
        )
        yield _gauge(
            "ic_metrics_database_up",
            "1 when the last scrape's database read answered in time.",
            1 if self._database_up else 0,
        )


def _consume(task: asyncio.Future[_DatabaseView]) -> None:
    # A read that outlived its scrape may fail later with nobody waiting: not an unhandled error.
    if not task.cancelled():
        task.exception()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


async def _read_database(hub: Hub) -> _DatabaseView:
    async with hub.database.read() as session:
        jobs = await jobs_q.count_in(session, statuses=sorted(ACTIVE), limit=_COUNT_LIMIT)
        oldest = await jobs_q.oldest_queued_at(session, user_id=None)
        runs = await workflows_q.count_in(session, statuses=_ACTIVE_RUNS, limit=_COUNT_LIMIT)
    age = None if oldest is None else max(0.0, (utcnow() - as_utc(oldest)).total_seconds())
    return _DatabaseView(jobs, runs, age)
