"""The tunnel transport (the default): the agent dials out to the hub and serves over that.

One WebSocket to ``{hub}/api/inference/agent/tunnel/`` (``Authorization: Bearer <key>``)
carries every request in both directions, so the agent needs no listening port. The
agent sends ``HELLO`` (protocol version, heartbeat body, limits), the hub answers
``WELCOME``; after that each ``OPEN`` from the hub becomes one :meth:`Relay.open` call
whose answer streams back under the hub's credits. Heartbeats travel as ``HEARTBEAT``
frames every ``heartbeat_interval_s`` and whenever discovery changes the model list.

- Any loss (hub restart, network, dead peer) is followed by a reconnect with jittered
  exponential backoff (1 s, 2 s, 4 s, ... capped at 30 s; each delay between half and
  all of it). A refused key or an unsupported protocol version is logged as such and
  retried the same way (the operator may fix the key, the hub may be upgraded).
- ``RESET`` from the hub (its client went away) cancels the stream's relay, which
  aborts the engine request; an engine answer that breaks off resets the stream.
- :meth:`TunnelClient.stop` drains: ``GOAWAY`` (the hub routes no new request here),
  running streams finish for up to ``shutdown_grace`` seconds, the rest are aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.frames import Frame as WebSocketFrame
from websockets.frames import Opcode
from websockets.protocol import Event

from .. import __version__
from ..domain.heartbeat import HeartbeatBody
from ..tunnel.mux import Mux, Stream, StreamReset
from ..tunnel.protocol import (
    DEFAULT_MAX_STREAMS,
    DEFAULT_WINDOW,
    HELLO_TIMEOUT_S,
    MAX_FRAME_SIZE,
    MAX_STREAMS,
    PROGRESS_VERSION,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    CloseCode,
    Flag,
    Frame,
    FrameType,
    GoAway,
    Hello,
    Progress,
    ProtocolError,
    RequestHead,
    ResetCode,
    ResponseHead,
    Welcome,
    decode_frame,
)
from ..tunnel.traffic import Traffic
from ..waiting import cancel_and_wait, wait_event
from .config import AgentConfig
from .heartbeat import MAX_BACKOFF_S, backoff_delay, heartbeat_body
from .relay import Relay, RelayStreamError

__all__ = [
    "PROTOCOL_VARIABLE",
    "STREAMS_SPARE",
    "TUNNEL_PATH",
    "TunnelClient",
    "TunnelRefused",
    "offered_protocol",
    "stream_limit",
    "tunnel_url",
]

log = logging.getLogger("inference_club.agent.tunnel")

TUNNEL_PATH = "/api/inference/agent/tunnel/"

BodyBuilder = Callable[[], Awaitable[HeartbeatBody]]

PROTOCOL_VARIABLE = "IC_TUNNEL_PROTOCOL"


def offered_protocol(environ: Mapping[str, str] = os.environ) -> int:
    """The tunnel version the hello offers: the newest, or a lower one named by ``IC_TUNNEL_PROTOCOL``
    (to compare versions, or to step around a fault of a newer one)."""
    value = environ.get(PROTOCOL_VARIABLE, "").strip()
    if not value:
        return PROTOCOL_VERSION
    if not value.isdigit() or int(value) not in SUPPORTED_VERSIONS:
        choices = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise ValueError(f"{PROTOCOL_VARIABLE} must be one of {choices}, not {value!r}")
    return int(value)


class TunnelRefused(Exception):
    """The hub would not open the tunnel (key, protocol version, hello)."""

    def __init__(self, message: str, *, kind: str, retry_now: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_now = retry_now
        """The agent changed what it offers (an older hub's version): try again at once."""


def tunnel_url(hub: str) -> str:
    """``https://hub/x`` → ``wss://hub/x/api/inference/agent/tunnel/``."""
    parts = urlsplit(hub)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + TUNNEL_PATH, "", ""))


class DeliveringConnection(ClientConnection):
    """websockets' client connection, handing binary messages to :attr:`receiver` as it reads them.

    The tunnel's mux then dispatches a message in the callback that read it, not after a
    switch to its reader task. A message goes the ordinary way (to ``recv``) while an
    older one still waits there, so the order holds; so do text messages, fragments and
    the end of the connection.
    """

    receiver: Callable[[bytes], None] | None = None

    def process_event(self, event: Event) -> None:
        receiver = self.receiver
        if (
            receiver is not None
            and isinstance(event, WebSocketFrame)
            and event.opcode is Opcode.BINARY
            and event.fin
            and not len(self.recv_messages.frames)
        ):
            receiver(bytes(event.data))
            return
        super().process_event(event)


class ClientLink:
    """The tunnel's link over a ``websockets`` client connection."""

    def __init__(self, ws: ClientConnection, traffic: Traffic | None = None) -> None:
        self._ws = ws
        self.traffic = traffic if traffic is not None else Traffic()

    async def receive(self) -> bytes | None:
        try:
            message = await self._ws.recv()
        except ConnectionClosed:
            return None
        if isinstance(message, str):
            raise ProtocolError("text message on the tunnel (frames are binary)")
        self.traffic.received += len(message)
        self.traffic.messages_received += 1
        return message

    async def send(self, data: bytes) -> None:
        self.traffic.sent += len(data)
        self.traffic.messages_sent += 1
        await self._ws.send(data)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)

    def deliver_to(self, receiver: Callable[[bytes], None]) -> None:
        """Binary messages to ``receiver`` as they are read (a :class:`DeliveringConnection`'s)."""
        if not isinstance(self._ws, DeliveringConnection):
            raise TypeError("this connection cannot deliver: open it with DeliveringConnection")
        self._ws.receiver = self.traffic.counting(receiver)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake (as a network failure would)."""
        self._ws.transport.abort()


STREAMS_SPARE = 64
"""Streams beside the configured concurrency: the hub frees a call's slot as its answer
ends, a moment before this side forgets the stream."""


def stream_limit(max_concurrencies: Iterable[int]) -> int:
    """Streams a tunnel takes at once (its hello's ``max_streams``): every service at its
    ``max_concurrency`` at once, and spares; never fewer than the protocol's default, nor
    more than a hello may offer.

    Fewer would turn away calls the hub was told this agent takes.
    """
    return min(MAX_STREAMS, max(DEFAULT_MAX_STREAMS, sum(max_concurrencies) + STREAMS_SPARE))


class TunnelClient:
    """The agent's tunnel transport; see the module docstring."""

    name = "tunnel"

    def __init__(
        self,
        config: AgentConfig,
        relay: Relay,
        *,
        window: int = DEFAULT_WINDOW,
        max_frame: int = MAX_FRAME_SIZE,
        max_streams: int | None = None,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.config = config
        self.relay = relay
        self.url = tunnel_url(config.hub)
        self.window = window
        self.max_frame = max_frame
        self.max_streams = (
            max_streams
            if max_streams is not None
            else stream_limit(s.max_concurrency for s in config.services)
        )
        self.hello_timeout_s = hello_timeout_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.registered = asyncio.Event()
        """Set once the hub has welcomed this agent (stays set across reconnects)."""
        self.connected = asyncio.Event()
        """Set while a tunnel is open."""
        self.welcome: Welcome | None = None
        self.sessions = 0
        self.failures = 0
        self._build_body: BodyBuilder = self._minimal_body
        self._mux: Mux | None = None
        self._link: ClientLink | None = None
        self._handlers: dict[int, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_failure: str | None = None
        self.protocol = offered_protocol()
        """The tunnel protocol version offered in the hello (lowered for an older hub)."""
        self.traffic = Traffic()
        """Bytes over this agent's tunnel connections (read by the agent's metrics)."""

    def __repr__(self) -> str:
        return (
            f"<TunnelClient {self.url} connected={self.connected.is_set()} "
            f"streams={len(self._handlers)} failures={self.failures}>"
        )

    @property
    def callback_url(self) -> str | None:
        return None

    @property
    def mux(self) -> Mux | None:
        """The open connection's multiplexer (None while disconnected)."""
        return self._mux

    @property
    def link(self) -> ClientLink | None:
        """The open connection (None while disconnected)."""
        return self._link if self._mux is not None else None

    def carry_heartbeat(self, build_body: BodyBuilder) -> None:
        """Use ``build_body`` for the hello and the heartbeats sent over the tunnel."""
        self._build_body = build_body

    def poke(self) -> None:
        """Send a heartbeat now (the model list changed)."""
        self._poked.set()

    def send_progress(self, request_id: str, value: float, stage: str) -> bool:
        """Tell the hub how far a request's engine job is; False when it cannot be sent
        (no tunnel, or a version-1 tunnel, which has no PROGRESS frame)."""
        mux = self._mux
        welcome = self.welcome
        if mux is None or mux.closed or welcome is None or welcome.protocol < PROGRESS_VERSION:
            return False
        mux.send_control(Progress(request_id, value, stage).to_frame())
        return True

    async def start(self) -> None:
        """Start connecting in the background (the hub may not be up yet)."""
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="agent-tunnel")

    async def stop(self) -> None:
        """Drain: no new streams, running ones finish up to the grace period, then close."""
        self._stopping.set()
        mux = self._mux
        if (mux is None or mux.closed) and self._task is not None:
            self._task.cancel()  # connecting or backing off: nothing to drain
        elif mux is not None:
            mux.draining = True
            mux.send_control(GoAway("draining", "the agent is shutting down").to_frame())
            running = list(self._handlers.values())
            if running:
                log.info(
                    "draining %d running request(s) for up to %gs", len(running), self.config.shutdown_grace_s
                )
                await asyncio.wait(running, timeout=self.config.shutdown_grace_s)
            mux.close(CloseCode.GOING_AWAY, "the agent is shutting down")
        if self._task is not None:
            try:
                async with asyncio.timeout(5.0):
                    await asyncio.shield(self._task)
            except (TimeoutError, asyncio.CancelledError):
                await cancel_and_wait(self._task)
            self._task = None

    # ------------------------------------------------------------------ connecting

    async def _run(self) -> None:
        while not self._stopping.is_set():
            welcomed = False
            try:
                welcomed = await self._session()
            except TunnelRefused as exc:
                if exc.retry_now and not self._stopping.is_set():
                    log.info("tunnel: %s", exc)
                    continue
                self._failed(exc.kind, str(exc), level=logging.ERROR)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    self._failed(
                        "refused",
                        f"the hub refused the key (HTTP {status}); check --key / IC_AGENT_KEY",
                        level=logging.ERROR,
                    )
                else:
                    self._failed(f"http-{status}", f"the hub answered HTTP {status} to the tunnel request")
            except (OSError, TimeoutError, WebSocketException, ProtocolError) as exc:
                self._failed(
                    "unreachable", f"cannot reach the hub at {self.url}: {type(exc).__name__}: {exc}"
                )
            except Exception as exc:  # pragma: no cover - a bug must not end the loop
                log.exception("tunnel failed")
                self._failed("bug", repr(exc))
            if self._stopping.is_set():
                return
            if welcomed:
                self.failures = 0
            self.failures += 1
            delay = backoff_delay(self.failures, base_s=self.base_backoff_s, cap_s=self.max_backoff_s)
            log.debug("reconnecting in %.1fs (attempt %d)", delay, self.failures)
            await wait_event(self._stopping, delay)

    def _failed(self, kind: str, message: str, *, level: int = logging.WARNING) -> None:
        if kind != self._last_failure:
            log.log(level, "tunnel: %s; retrying with backoff", message)
            self._last_failure = kind
        else:
            log.debug("tunnel: %s", message)

    async def _session(self) -> bool:
        """One connection, from the handshake to its end. True if the hub welcomed us."""
        async with connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.config.key}"},
            user_agent_header=f"inference-club-agent/{__version__}",
            open_timeout=self.config.connect_timeout_s,
            close_timeout=2.0,
            ping_interval=None,  # liveness is the tunnel's own PING/PONG
            compression=None,
            max_size=self.max_frame,
            create_connection=DeliveringConnection,
        ) as ws:
            link = ClientLink(ws, self.traffic)
            hello = Hello(
                protocol=self.protocol,
                heartbeat=(await self._build_body()).to_wire(),
                agent_version=__version__,
                window=self.window,
                max_frame=self.max_frame,
                max_streams=self.max_streams,
            )
            await link.send(hello.to_frame().encode())
            link.traffic.frames_sent += 1
            welcome = await self._read_welcome(ws, link)
            link.traffic.frames_received += 1  # the WELCOME (the mux counts every later frame)
            mux = Mux(
                link,
                opener=False,
                protocol=min(welcome.protocol, self.protocol),
                recv_window=self.window,
                send_window=welcome.window,
                recv_max_frame=self.max_frame,
                send_max_frame=welcome.max_frame,
                max_streams=self.max_streams,
                ping_interval_s=welcome.ping_interval_s,
                dead_after_s=welcome.dead_after_s,
                on_open=self._on_open,
                on_reset=self._on_reset,
                on_control=self._on_control,
                label=f"tunnel {welcome.tunnel_id or '-'}",
            )
            self._mux = mux
            self._link = link
            self.welcome = welcome
            self.sessions += 1
            if self._last_failure is not None or self.sessions > 1:
                log.info("tunnel to %s open again (provider %s)", self.url, welcome.provider_id)
            else:
                log.info("tunnel to %s open: provider %s", self.url, welcome.provider_id)
            self._last_failure = None
            self.connected.set()
            self.registered.set()
            beats = asyncio.create_task(
                self._beat(mux, welcome.heartbeat_interval_s), name="agent-tunnel-beat"
            )
            try:
                await mux.run()
            finally:
                self.connected.clear()
                self._mux = None
                self._link = None
                beats.cancel()
                handlers = list(self._handlers.values())
                for task in handlers:
                    task.cancel()
                for task in [beats, *handlers]:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if not self._stopping.is_set():
                log.warning("tunnel closed (%s); reconnecting", mux.close_reason or "no reason given")
            return True

    async def _read_welcome(self, ws: ClientConnection, link: ClientLink) -> Welcome:
        async with asyncio.timeout(self.hello_timeout_s):
            raw = await link.receive()
        if raw is None:
            reason = ws.close_reason or "no reason given"
            raise TunnelRefused(
                f"the hub closed the tunnel before welcoming it ({ws.close_code}: {reason})",
                kind=f"closed-{ws.close_code}",
            )
        frame = decode_frame(raw, max_size=self.max_frame)
        if frame.type is FrameType.GOAWAY:
            refusal = GoAway.from_frame(frame)
            hint = ""
            step_down = False
            if refusal.code == "unsupported_version":
                common = set(refusal.supported) & SUPPORTED_VERSIONS
                if common and max(common) < self.protocol:
                    # An older hub: speak its version on the next try, which is at once
                    # (nothing failed; a backoff would only delay the tunnel).
                    self.protocol = max(common)
                    step_down = True
                    hint = f" (the hub speaks tunnel protocol {list(refusal.supported)}; retrying with {self.protocol})"
                else:
                    hint = f" (the hub speaks tunnel protocol {list(refusal.supported)}; upgrade one side)"
            raise TunnelRefused(
                f"the hub refused the tunnel: {refusal.code}: {refusal.message}{hint}",
                kind=refusal.code,
                retry_now=step_down,
            )
        try:
            return Welcome.from_frame(frame)
        except ProtocolError as exc:
            with contextlib.suppress(Exception):
                await link.close(exc.close_code, str(exc)[:120])
            raise TunnelRefused(f"the hub's welcome is not acceptable: {exc}", kind="bad-welcome") from None

    async def _beat(self, mux: Mux, interval_s: float) -> None:
        while True:
            await wait_event(self._poked, interval_s)
            self._poked.clear()
            try:
                body = await self._build_body()
                mux.send_control(Frame(FrameType.HEARTBEAT, 0, Flag.NONE, orjson.dumps(body.to_wire())))
            except Exception:
                log.exception("could not send a heartbeat over the tunnel")

    async def _minimal_body(self) -> HeartbeatBody:
        return heartbeat_body(
            name=self.config.name,
            transport=self.name,
            callback_url=None,
            catalog=self.relay.catalog,
            health={},
        )

    # ------------------------------------------------------------------ streams

    def _on_open(self, stream: Stream, frame: Frame) -> None:
        try:
            head = RequestHead.from_payload(frame)
        except ProtocolError as exc:
            stream.reset(ResetCode.INTERNAL, f"bad request head: {exc}")
            return
        task = stream.loop.create_task(self._serve(stream, head), name=f"agent-tunnel-stream-{stream.id}")
        self._handlers[stream.id] = task
        task.add_done_callback(lambda _: self._handlers.pop(stream.id, None))

    def _on_reset(self, stream: Stream) -> None:
        task = self._handlers.get(stream.id)
        if task is not None:
            task.cancel()

    def _on_control(self, frame: Frame) -> None:
        if frame.type is FrameType.GOAWAY:
            notice = GoAway.from_frame(frame)
            log.info("the hub says goaway: %s %s", notice.code, notice.message)
        else:
            raise ProtocolError(f"unexpected {frame.type.name} from the hub")

    async def _serve(self, stream: Stream, head: RequestHead) -> None:
        headers = dict(head.headers)
        if head.request_id:
            headers.setdefault("x-request-id", head.request_id)
        try:
            try:
                response = await self.relay.open(
                    service_type=head.service_type,
                    model=head.model,
                    method=head.method,
                    path=head.path,
                    headers=headers,
                    # Nearly always here already: it came in the OPEN's message.
                    body=whole if (whole := stream.take_whole_body()) is not None else _body(stream),
                )
            except StreamReset:
                return
            except Exception:
                log.exception("relaying %s %s failed", head.method, head.path)
                stream.reset(ResetCode.INTERNAL, "the agent failed to relay the request")
                return
            async with response:
                await response.read_lead()
                stream.send_head(ResponseHead(response.status, response.headers).to_frame(stream.id))
                try:
                    async for chunk in response.aiter_bytes():
                        await stream.write(chunk)
                except RelayStreamError as exc:
                    log.warning("%s (request_id=%s)", exc, head.request_id or "-")
                    stream.reset(ResetCode.UPSTREAM_ERROR, str(exc), after_data=True)
                    return
                stream.end()
        except StreamReset:
            return  # the hub cancelled, or the tunnel died: the engine request is closed above
        except asyncio.CancelledError:
            if stream.failed is None:
                stream.reset(ResetCode.CANCEL, "the agent stopped the request")
            raise
        finally:
            stream.release()


async def _body(stream: Stream) -> AsyncIterator[bytes]:
    while (chunk := await stream.read()) is not None:
        yield chunk
