"""The agent's own Prometheus metrics, served on ``--metrics-listen HOST:PORT``.

Relayed requests, engine time and errors per service are counted as each relayed
request finishes (plain counters, see :mod:`inference_club.telemetry.tally`); requests
in flight and the tunnel's state are read when scraped. ``GET /metrics`` wants
``Authorization: Bearer <metrics token>`` (``--metrics-token``); anything else answers
401 with the hub's error envelope.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ..telemetry.tally import Buckets, FamiliesCollector, Tally, in_out_counters
from .discovery import Catalog
from .listener import BackgroundServer, bind_listening_socket

if TYPE_CHECKING:
    from ..tunnel.mux import Mux
    from ..tunnel.traffic import Traffic


class TunnelView(Protocol):
    """What the metrics read of the agent's tunnel client (kept structural: the tunnel
    module imports the relay, which imports this one)."""

    @property
    def mux(self) -> Mux | None: ...

    connected: asyncio.Event
    sessions: int
    failures: int
    traffic: Traffic


__all__ = ["AgentMetrics", "MetricsServer", "RelayOutcome"]

log = logging.getLogger("inference_club.agent.metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RelayOutcome:
    """How one relayed request ended, as the relay reports it."""

    __slots__ = ("aborted", "agent_error", "seconds", "service", "status")

    def __init__(
        self, service: str, status: int, seconds: float, *, agent_error: bool, aborted: bool
    ) -> None:
        self.service = service
        self.status = status
        self.seconds = seconds
        self.agent_error = agent_error
        self.aborted = aborted


class AgentMetrics:
    """Counters of one agent, and the collector that reads its catalog and tunnel."""

    def __init__(self, catalog: Catalog) -> None:
        self.registry = CollectorRegistry()
        self.catalog = catalog
        self.tunnel: TunnelView | None = None
        """Read when scraped (the tunnel transport only)."""
        self.relayed = Tally(
            "ic_agent_relayed_requests",
            "Requests relayed to local engines, by service (type#index) and status.",
            ["service", "status"],
        )
        self.engine_time = Buckets(
            "ic_agent_engine_duration_seconds",
            "Time from the relayed request's arrival to the engine's last byte, by service.",
            ["service"],
        )
        self.errors = Tally(
            "ic_agent_engine_errors",
            "Relayed requests that failed, by service and kind "
            "(agent: the agent answered itself, e.g. engine unreachable; engine: a 5xx from "
            "the engine; aborted: the answer broke off or the hub went away).",
            ["service", "kind"],
        )
        self.registry.register(FamiliesCollector(self._families))

    def __repr__(self) -> str:
        return f"<AgentMetrics relayed={sum(self.relayed.values.values()):g}>"

    def observe(self, outcome: RelayOutcome) -> None:
        self.relayed.add((outcome.service, str(outcome.status)))
        self.engine_time.observe((outcome.service,), outcome.seconds)
        if outcome.aborted:
            self.errors.add((outcome.service, "aborted"))
        elif outcome.agent_error and outcome.status >= 400:
            self.errors.add((outcome.service, "agent"))
        elif outcome.status >= 500:
            self.errors.add((outcome.service, "engine"))

    def _families(self) -> Iterator[Metric]:
        yield self.relayed.family()
        yield self.engine_time.family()
        yield self.errors.family()
        in_flight = GaugeMetricFamily(
            "ic_agent_requests_in_flight",
            "Requests at the local engines right now, by service.",
            labels=["service", "engine"],
        )
        for service in self.catalog.services:
            in_flight.add_metric(
                [f"{service.config.type}#{service.index}", service.config.engine], service.in_flight
            )
        yield in_flight
        tunnel = self.tunnel
        if tunnel is None:
            return
        mux = tunnel.mux
        yield GaugeMetricFamily(
            "ic_agent_tunnel_connected",
            "1 while the tunnel to the hub is open.",
            value=1 if tunnel.connected.is_set() else 0,
        )
        yield CounterMetricFamily(
            "ic_agent_tunnel_sessions",
            "Tunnel connections the hub welcomed since start.",
            value=tunnel.sessions,
        )
        yield GaugeMetricFamily(
            "ic_agent_tunnel_failures",
            "Failed connection attempts since the last welcomed one.",
            value=tunnel.failures,
        )
        yield GaugeMetricFamily(
            "ic_agent_tunnel_streams_open",
            "Requests in flight over the tunnel.",
            value=0 if mux is None else len(mux.streams),
        )
        yield from in_out_counters(
            "ic_agent_tunnel",
            "over the tunnel since start, by direction as the agent sees it",
            tunnel.traffic.families(),
        )


class MetricsApp:
    """ASGI app: ``GET /metrics`` with the bearer token; 401 or 404 otherwise."""

    def __init__(self, metrics: AgentMetrics, token: str) -> None:
        self.metrics = metrics
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].rstrip("/") != "/metrics":
            await _send(send, 404, {"detail": "Not Found"})
            return
        presented = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                presented = value[7:].strip()
        if not (presented and hmac.compare_digest(presented, self._token)):
            message = "GET /metrics needs the agent's metrics token (--metrics-token) as the bearer token."
            await _send(
                send,
                401,
                {
                    "detail": message,
                    "error": {
                        "message": message,
                        "type": "invalid_api_key",
                        "param": None,
                        "code": "invalid_api_key",
                    },
                },
                extra=[(b"www-authenticate", b"Bearer")],
            )
            return
        body = generate_latest(self.metrics.registry)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE_LATEST.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _send(
    send: Send, status: int, payload: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


class MetricsServer:
    """Serves :class:`MetricsApp` on ``host:port`` (port 0 picks a free one) inside the agent's loop."""

    def __init__(self, metrics: AgentMetrics, token: str, *, host: str, port: int) -> None:
        self.app = MetricsApp(metrics, token)
        self.host = host
        self.port = port
        self.bound_port: int | None = None
        self._serving = BackgroundServer("the metrics server")

    def __repr__(self) -> str:
        return f"<MetricsServer {self.host}:{self.bound_port or self.port}>"

    async def start(self) -> None:

        sock = bind_listening_socket(self.host, self.port)
        self.bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            ws="none",
            timeout_graceful_shutdown=1,
        )
        await self._serving.start(config, sock)
        log.info("metrics on http://%s:%d/metrics", self.host, self.bound_port)

    async def stop(self) -> None:
        await self._serving.stop()
