"""Wiring: discovery, relay, a transport and the heartbeat, started and stopped together.

:class:`AgentRunner` is the in-process handle (tests start an agent on an ephemeral
port with ``listen_port=0`` and read :attr:`AgentRunner.callback_url`);
:func:`run_agent` runs one until SIGINT/SIGTERM or a ``stop`` event.

Transports are a seam: :data:`TRANSPORTS` maps a config ``transport`` value to a
factory ``(config, relay, secrets) -> AgentTransport``: ``tunnel`` (the default, see
``agent/tunnel.py``) and ``direct``. A transport that is a :class:`HeartbeatCarrier` (the
tunnel) carries the heartbeat itself; the HTTP heartbeat loop then does not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, runtime_checkable

import httpx

from ..domain.heartbeat import HeartbeatBody
from ..netpool import PooledClient
from ..telemetry.logformat import log_lines_per_turn
from .config import AgentConfig
from .direct import DirectServer, SecretBox
from .discovery import Catalog, Discovery
from .health import collect_health
from .heartbeat import Heartbeat, HeartbeatAnswer, heartbeat_body
from .metrics import AgentMetrics, MetricsServer
from .progress import ProgressPoster
from .relay import Relay, engine_connection_limit, make_engine_client

__all__ = [
    "TRANSPORTS",
    "AgentRunner",
    "AgentTransport",
    "HeartbeatCarrier",
    "TransportFactory",
    "TransportUnavailable",
    "run_agent",
]

log = logging.getLogger("inference_club.agent")


class AgentTransport(Protocol):
    """How the hub reaches this agent's :class:`Relay`."""

    name: str

    @property
    def callback_url(self) -> str | None:
        """The URL the heartbeat advertises (direct), or None (tunnel)."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop taking requests; let running ones finish up to the config's grace."""


TransportFactory = Callable[[AgentConfig, Relay, SecretBox], AgentTransport]


@runtime_checkable
class HeartbeatCarrier(Protocol):
    """A transport that sends the heartbeat over its own connection (the tunnel)."""

    registered: asyncio.Event

    def carry_heartbeat(self, build_body: Callable[[], Awaitable[HeartbeatBody]]) -> None: ...

    def poke(self) -> None: ...


class TransportUnavailable(RuntimeError):
    """The configured transport is not implemented by this agent."""


def _direct(config: AgentConfig, relay: Relay, secrets: SecretBox) -> AgentTransport:
    return DirectServer(
        relay,
        secrets,
        host=config.listen_host,
        port=config.listen_port,
        callback_url=config.callback_url,
        shutdown_grace_s=config.shutdown_grace_s,
    )


def _tunnel(config: AgentConfig, relay: Relay, secrets: SecretBox) -> AgentTransport:
    from .tunnel import TunnelClient

    return TunnelClient(config, relay)


TRANSPORTS: dict[str, TransportFactory] = {"direct": _direct, "tunnel": _tunnel}


def transport_factory(name: str) -> TransportFactory:
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise TransportUnavailable(
            f"the {name!r} transport is not available; use 'tunnel' (the default) or "
            "'direct' (--direct --listen HOST:PORT)"
        ) from None


class AgentRunner:
    """One agent, in process.

    ``hub_transport`` lets tests reach an in-process hub (``httpx.ASGITransport``);
    ``engine_client`` replaces the pooled client used for local servers.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        hub_transport: httpx.AsyncBaseTransport | None = None,
        engine_client: PooledClient | None = None,
        report_gpus: bool = True,
    ) -> None:
        self.config = config
        self._factory = transport_factory(config.transport)
        self._owns_engine_client = engine_client is None
        self.engine_connections = engine_connection_limit(s.max_concurrency for s in config.services)
        self.engine_client = engine_client or make_engine_client(
            connect_timeout_s=config.connect_timeout_s,
            request_timeout_s=config.request_timeout_s,
            max_connections=self.engine_connections,
        )
        self.catalog = Catalog(config.services)
        self.relay = Relay(self.catalog, self.engine_client)
        self.metrics = AgentMetrics(self.catalog)
        self.relay.on_finished = self.metrics.observe
        self.secrets = SecretBox()
        self.transport: AgentTransport = self._factory(config, self.relay, self.secrets)
        if config.transport == "tunnel":
            from .tunnel import TunnelClient

            if isinstance(self.transport, TunnelClient):
                self.metrics.tunnel = self.transport
        self.metrics_server: MetricsServer | None = None
        if config.metrics_listen is not None:
            host, port = config.metrics_listen
            self.metrics_server = MetricsServer(self.metrics, config.metrics_token, host=host, port=port)
        self.heartbeat = Heartbeat(
            url=config.heartbeat_url,
            key=config.key,
            build_body=self._heartbeat_body,
            on_answer=self._on_answer,
            transport=hub_transport,
        )
        self.discovery = Discovery(
            self.catalog,
            self.engine_client,
            interval_s=config.discover_interval_s,
            timeout_s=min(10.0, config.connect_timeout_s + 5.0),
            on_change=self._poke,
        )
        self._carrier = self.transport if isinstance(self.transport, HeartbeatCarrier) else None
        if self._carrier is not None:
            self._carrier.carry_heartbeat(self._heartbeat_body)
        # Progress of native engine jobs: a PROGRESS frame over the tunnel, else an HTTP post.
        self.progress = ProgressPoster(config.hub, config.key, self.heartbeat.client)
        send_progress = getattr(self.transport, "send_progress", None)
        self.relay.progress = send_progress if callable(send_progress) else self.progress.report
        self._report_gpus = report_gpus
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    def __repr__(self) -> str:
        return (
            f"<AgentRunner {self.config.name!r} transport={self.transport.name} "
            f"callback_url={self.callback_url!r} started={self._started}>"
        )

    @property
    def callback_url(self) -> str | None:
        return self.transport.callback_url

    @property
    def registered(self) -> asyncio.Event:
        """Set once the hub has accepted a heartbeat (over the tunnel: welcomed it)."""
        return self._carrier.registered if self._carrier is not None else self.heartbeat.registered

    def _poke(self) -> None:
        (self._carrier or self.heartbeat).poke()

    def set_agent_secret(self, secret: str) -> None:
        """Accept ``secret`` from the hub (normally set by the heartbeat answer)."""
        self.secrets.set(secret)

    async def start(self) -> None:
        """Discover models, start the transport, then heartbeat in the background."""
        if self._started:
            return
        self._started = True
        await self.discovery.refresh()
        try:
            if self.metrics_server is not None:
                await self.metrics_server.start()
            await self.transport.start()
        except BaseException:
            self._started = False
            if self.metrics_server is not None:
                await self.metrics_server.stop()
            await self._close_clients()
            raise
        log.info(
            "agent %r serving %d service(s) over %s%s",
            self.config.name,
            len(self.catalog.services),
            self.transport.name,
            f" at {self.callback_url}" if self.callback_url else "",
        )
        self._tasks = [asyncio.create_task(self.discovery.run(self._stop), name="agent-discovery")]
        if self._carrier is None:
            self._tasks.append(asyncio.create_task(self.heartbeat.run(self._stop), name="agent-heartbeat"))

    async def stop(self) -> None:
        """Stop heartbeating and discovery, drain the transport, close clients."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        try:
            await self.transport.stop()
        finally:
            if self.metrics_server is not None:
                await self.metrics_server.stop()
            await self._close_clients()
        log.info("agent %r stopped", self.config.name)

    async def __aenter__(self) -> AgentRunner:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _close_clients(self) -> None:
        await self.progress.aclose()
        await self.heartbeat.aclose()
        if self._owns_engine_client:
            await self.engine_client.aclose()

    async def _heartbeat_body(self) -> HeartbeatBody:
        health = await collect_health(self.catalog, gpus=self._report_gpus)
        return heartbeat_body(
            name=self.config.name,
            transport=self.transport.name,
            callback_url=self.callback_url,
            catalog=self.catalog,
            health=health,
        )

    def _on_answer(self, answer: HeartbeatAnswer) -> None:
        if answer.agent_secret:
            self.secrets.set(answer.agent_secret)


async def run_agent(config: AgentConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run an agent until ``stop`` is set or SIGINT/SIGTERM arrives.

    On the first signal the agent stops heartbeating and lets running requests finish
    (up to ``shutdown_grace``); a second signal interrupts at once.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s: shutting down (again to force)", sig.name)
        stop.set()
        for s in installed:  # the next signal gets the default behaviour
            loop.remove_signal_handler(s)
        installed.clear()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)

    runner = AgentRunner(config)
    with log_lines_per_turn(loop):
        try:
            await runner.start()
            await stop.wait()
        finally:
            for s in installed:
                loop.remove_signal_handler(s)
            await runner.stop()
