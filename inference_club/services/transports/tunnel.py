"""Tunnel transport: requests reach an agent over the WebSocket the agent opened.

:meth:`TunnelTransport.serve` runs one agent connection (hello, registration, frames,
heartbeats) for the route in ``surfaces/http/tunnel.py``. While it runs the provider
is routable; when it ends (or the agent says it drains) the provider's tunnel count
drops at once, and streams still open on it fail: before the response head with
:class:`TransportUnavailable` (the router fails over), afterwards from ``aiter_bytes``.

A provider may hold several tunnels (several agent processes with the same name);
each request goes to the one with the fewest open streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from inference_club.domain.ids import new_id
from inference_club.domain.providers import ProviderState, parse_heartbeat
from inference_club.errors import AuthError, HubError
from inference_club.services.auth import Principal
from inference_club.services.registry import ProviderRegistry
from inference_club.services.transports.base import (
    BodyFactory,
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
)
from inference_club.tunnel.mux import Link, Mux, Stream, StreamReset, StreamUnavailable
from inference_club.tunnel.protocol import (
    DEAD_AFTER_S,
    DEFAULT_WINDOW,
    HELLO_TIMEOUT_S,
    MAX_FRAME_SIZE,
    PING_INTERVAL_S,
    CloseCode,
    Frame,
    FrameType,
    GoAway,
    Hello,
    ProtocolError,
    RequestHead,
    ResetCode,
    ResponseHead,
    UnsupportedVersion,
    Welcome,
    decode_frame,
)

log = logging.getLogger("inference_club.tunnel")

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
     "content-encoding", "date", "server"}
)

Reauthenticate = Callable[[], Awaitable[Principal]]


@dataclass(frozen=True, slots=True)
class TunnelStats:
    tunnels: int
    streams: int
    buffered_bytes: int
    """Response bytes received from agents and not yet read by the hub, right now."""
    peak_stream_buffered: int
    """The most response bytes ever buffered for a single stream (bounded by the window)."""
    window: int


class HubTunnel:
    """One agent connection, as the hub sees it."""

    def __init__(self, mux: Mux, *, tunnel_id: str, provider_id: str, name: str, agent_version: str) -> None:
        self.mux = mux
        self.id = tunnel_id
        self.provider_id = provider_id
        self.name = name
        self.agent_version = agent_version
        self.closed = asyncio.Event()
        self._refresh: asyncio.Task[None] | None = None
        self._pending_beat: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<HubTunnel {self.id} provider={self.name!r} streams={self.load} routable={self.routable}>"

    @property
    def load(self) -> int:
        return len(self.mux.streams)

    @property
    def routable(self) -> bool:
        return self.mux.accepts_streams and self.load < self.mux.max_streams


class TunnelResponse:
    """The agent's answer on one stream: head received, body read under credits."""

    def __init__(
        self, tunnel: HubTunnel, stream: Stream, head: ResponseHead, body_task: asyncio.Task[Any],
        read_timeout_s: float, on_done: Callable[[Stream], None],
    ) -> None:
        self._tunnel = tunnel
        self._stream = stream
        self._body_task = body_task
        self._read_timeout_s = read_timeout_s
        self._on_done = on_done
        self._closed = False
        self.status = head.status
        self.headers = [(k, v) for k, v in head.headers if k.lower() not in _HOP_BY_HOP]
        self.agent_error = any(k.lower() == "x-ic-agent-error" and v == "1" for k, v in head.headers)

    def __repr__(self) -> str:
        return f"<TunnelResponse {self.status} stream={self._stream.id} tunnel={self._tunnel.id}>"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self._read_timeout_s):
                    chunk = await self._stream.read()
            except TimeoutError:
                self._stream.reset(ResetCode.CANCEL, "the hub stopped waiting for the answer")
                raise TransportTimeout(
                    f"provider {self._tunnel.name!r} sent nothing for {self._read_timeout_s:g}s"
                ) from None
            except StreamReset as exc:
                raise TransportUnavailable(f"provider {self._tunnel.name!r}: {exc}") from exc
            if chunk is None:
                return
            yield chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await _cancel(self._body_task)
        stream = self._stream
        if stream.failed is None and not stream.remote_ended:
            stream.reset(ResetCode.CANCEL, "the client went away")
        self._on_done(stream)


class TunnelTransport:
    """Holds every agent tunnel of this hub process and sends requests over them."""

    name = "tunnel"

    def __init__(
        self,
        registry: ProviderRegistry,
        *,
        upstream_timeout_s: float = 600.0,
        heartbeat_interval_s: float = 30.0,
        window: int = DEFAULT_WINDOW,
        max_frame: int = MAX_FRAME_SIZE,
        ping_interval_s: float = PING_INTERVAL_S,
        dead_after_s: float = DEAD_AFTER_S,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
    ) -> None:
        self._registry = registry
        self.upstream_timeout_s = upstream_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.window = window
        self.max_frame = max_frame
        self.ping_interval_s = ping_interval_s
        self.dead_after_s = dead_after_s
        self.hello_timeout_s = hello_timeout_s
        self._by_provider: dict[str, list[HubTunnel]] = {}
        self._turn = itertools.count()
        self._peak_buffered = 0

    def __repr__(self) -> str:
        return f"<TunnelTransport tunnels={sum(len(t) for t in self._by_provider.values())}>"

    # ------------------------------------------------------------------ looking

    def tunnels(self, provider_id: str | None = None) -> list[HubTunnel]:
        if provider_id is not None:
            return list(self._by_provider.get(provider_id, ()))
        return [t for group in self._by_provider.values() for t in group]

    def stats(self) -> TunnelStats:
        tunnels = self.tunnels()
        streams = [s for t in tunnels for s in t.mux.streams.values()]
        peak = max([self._peak_buffered, *(s.max_buffered for s in streams)])
        return TunnelStats(
            tunnels=len(tunnels),
            streams=len(streams),
            buffered_bytes=sum(s.buffered for s in streams),
            peak_stream_buffered=peak,
            window=self.window,
        )

    # ------------------------------------------------------------------ requests

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> TunnelResponse:
        tunnel, stream = self._open_stream(provider)
        head = RequestHead(
            service_type=request.service_type,
            model=request.model,
            method=request.method,
            path=request.path,
            headers={**request.headers, "x-request-id": request.request_id},
            request_id=request.request_id,
        )
        try:
            stream.send_head(head.to_frame(stream.id))
        except (StreamReset, ProtocolError) as exc:
            self._done(stream)
            raise TransportUnavailable(f"provider {provider.name!r}: {exc}") from exc
        body_task = asyncio.create_task(_pump_body(stream, request.body), name=f"tunnel-body-{stream.id}")
        try:
            frame = await self._wait_head(stream, body_task)
            response_head = ResponseHead.from_payload(frame)
        except TimeoutError:
            await self._abandon(stream, body_task)
            raise TransportTimeout(
                f"provider {provider.name!r} did not answer within {self.upstream_timeout_s:g}s"
            ) from None
        except StreamReset as exc:
            await self._abandon(stream, body_task)
            raise TransportUnavailable(f"provider {provider.name!r}: {exc}") from exc
        except ProtocolError as exc:
            await self._abandon(stream, body_task)
            raise TransportUnavailable(f"provider {provider.name!r} sent a bad answer: {exc}") from exc
        except BaseException:
            await self._abandon(stream, body_task)
            raise
        return TunnelResponse(tunnel, stream, response_head, body_task, self.upstream_timeout_s, self._done)

    def _open_stream(self, provider: ProviderState) -> tuple[HubTunnel, Stream]:
        group = [t for t in self._by_provider.get(provider.id, ()) if t.routable]
        if not group:
            raise TransportUnavailable(f"provider {provider.name!r} has no open tunnel")
        turn = next(self._turn) % len(group)
        ordered = sorted(group[turn:] + group[:turn], key=lambda t: t.load)
        for tunnel in ordered:
            try:
                return tunnel, tunnel.mux.open_stream()
            except StreamUnavailable:
                continue
        raise TransportUnavailable(f"every tunnel of provider {provider.name!r} is full or closing")

    async def _wait_head(self, stream: Stream, body_task: asyncio.Task[BaseException | None]) -> Frame:
        async with asyncio.timeout(self.upstream_timeout_s):
            waiters: set[asyncio.Future[Any]] = {stream.head, body_task}
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if stream.head not in done:
                failure = body_task.result()
                if failure is not None and not isinstance(failure, StreamReset):
                    raise failure
            return await stream.head

    async def _abandon(self, stream: Stream, body_task: asyncio.Task[Any]) -> None:
        await _cancel(body_task)
        stream.reset(ResetCode.CANCEL, "the hub gave up on the request")
        self._done(stream)

    def _done(self, stream: Stream) -> None:
        self._peak_buffered = max(self._peak_buffered, stream.max_buffered)
        stream.release()

    # ------------------------------------------------------------------ connections

    async def serve(
        self, principal: Principal, link: Link, *, reauthenticate: Reauthenticate | None = None, peer: str = ""
    ) -> None:
        """Run one agent's tunnel until it closes: hello, registration, streams, heartbeats."""
        hello = await self._read_hello(link)
        if hello is None:
            return
        body = dict(hello.heartbeat)
        body.update(transport="tunnel", callback_url=None)
        try:
            provider = await self._registry.heartbeat(principal, parse_heartbeat(body))
        except HubError as exc:
            await _refuse(link, CloseCode.BAD_HELLO, "bad_hello", exc.message)
            return
        tunnel_id = new_id("tun")
        tunnel: HubTunnel | None = None

        def on_control(frame: Frame) -> None:
            assert tunnel is not None
            self._control(tunnel, principal, frame, reauthenticate)

        mux = Mux(
            link,
            opener=True,
            recv_window=self.window,
            send_window=hello.window,
            recv_max_frame=self.max_frame,
            send_max_frame=hello.max_frame,
            max_streams=hello.max_streams,
            ping_interval_s=self.ping_interval_s,
            dead_after_s=self.dead_after_s,
            on_control=on_control,
            label=f"tunnel {provider.name}/{tunnel_id}",
        )
        tunnel = HubTunnel(
            mux, tunnel_id=tunnel_id, provider_id=provider.id, name=provider.name, agent_version=hello.agent_version
        )
        mux.send_control(Welcome(
            provider_id=provider.id,
            tunnel_id=tunnel_id,
            window=self.window,
            max_frame=self.max_frame,
            ping_interval_s=self.ping_interval_s,
            dead_after_s=self.dead_after_s,
            heartbeat_interval_s=self.heartbeat_interval_s,
        ).to_frame())
        self._attach(tunnel)
        log.info("tunnel %s of provider %s attached (agent %s%s)", tunnel_id, provider.name,
                 hello.agent_version or "?", f" from {peer}" if peer else "")
        try:
            await mux.run()
        finally:
            self._detach(tunnel)
            if tunnel._refresh is not None:
                await _cancel(tunnel._refresh)
            tunnel.closed.set()
            log.info("tunnel %s of provider %s closed: %s", tunnel_id, provider.name, mux.close_reason or "-")

    async def _read_hello(self, link: Link) -> Hello | None:
        try:
            raw = await asyncio.wait_for(link.receive(), self.hello_timeout_s)
        except TimeoutError:
            await _refuse(link, CloseCode.BAD_HELLO, "bad_hello", f"no HELLO within {self.hello_timeout_s:g}s")
            return None
        except ProtocolError as exc:
            await _refuse(link, CloseCode.BAD_HELLO, "bad_hello", str(exc))
            return None
        if raw is None:
            return None
        try:
            return Hello.from_frame(decode_frame(raw, max_size=self.max_frame))
        except UnsupportedVersion as exc:
            log.warning("tunnel refused: %s", exc)
            await _refuse(link, CloseCode.UNSUPPORTED_VERSION, "unsupported_version", str(exc))
        except ProtocolError as exc:
            await _refuse(link, CloseCode.BAD_HELLO, "bad_hello", str(exc))
        return None

    def _control(
        self, tunnel: HubTunnel, principal: Principal, frame: Frame, reauthenticate: Reauthenticate | None
    ) -> None:
        if frame.type is FrameType.GOAWAY:
            log.info("tunnel %s of provider %s drains: %s", tunnel.id, tunnel.name, GoAway.from_frame(frame).code)
            self._sync(tunnel.provider_id)
        elif frame.type is FrameType.HEARTBEAT:
            tunnel._pending_beat = frame.json()
            if tunnel._refresh is None or tunnel._refresh.done():
                tunnel._refresh = asyncio.create_task(self._refresh(tunnel, principal, reauthenticate))
        else:
            raise ProtocolError(f"unexpected {frame.type.name} after the hello")

    async def _refresh(self, tunnel: HubTunnel, principal: Principal, reauthenticate: Reauthenticate | None) -> None:
        """Apply heartbeats that came over the tunnel; re-check the key on each."""
        while tunnel._pending_beat is not None:
            body, tunnel._pending_beat = tunnel._pending_beat, None
            try:
                if reauthenticate is not None:
                    principal = await reauthenticate()
                body.update(name=tunnel.name, transport="tunnel", callback_url=None)
                await self._registry.heartbeat(principal, parse_heartbeat(body))
            except AuthError:
                log.warning("tunnel %s: the key was revoked; closing", tunnel.id)
                tunnel.mux.send_control(GoAway("unauthorized", "the API key is no longer valid").to_frame())
                tunnel.mux.close(CloseCode.UNAUTHORIZED, "the API key is no longer valid")
                return
            except HubError as exc:
                log.warning("tunnel %s: heartbeat refused: %s", tunnel.id, exc.message)
            except Exception:  # pragma: no cover - keep the tunnel up on a bug
                log.exception("tunnel %s: heartbeat failed", tunnel.id)

    def _attach(self, tunnel: HubTunnel) -> None:
        self._by_provider.setdefault(tunnel.provider_id, []).append(tunnel)
        self._sync(tunnel.provider_id)

    def _detach(self, tunnel: HubTunnel) -> None:
        group = self._by_provider.get(tunnel.provider_id, [])
        if tunnel in group:
            group.remove(tunnel)
        if not group:
            self._by_provider.pop(tunnel.provider_id, None)
        self._sync(tunnel.provider_id)

    def _sync(self, provider_id: str) -> None:
        """Routing sees the provider online iff it has a tunnel taking new streams."""
        state = self._registry.get(provider_id)
        if state is not None:
            state.tunnels = sum(1 for t in self._by_provider.get(provider_id, ()) if t.mux.accepts_streams)

    async def aclose(self) -> None:
        """Tell every agent the hub goes away and close the tunnels (agents reconnect)."""
        tunnels = self.tunnels()
        for tunnel in tunnels:
            tunnel.mux.send_control(GoAway("hub_shutdown", "the hub is shutting down").to_frame())
            tunnel.mux.close(CloseCode.GOING_AWAY, "the hub is shutting down")
        if tunnels:
            await asyncio.wait([asyncio.create_task(t.closed.wait()) for t in tunnels], timeout=3.0)


async def _pump_body(stream: Stream, body: BodyFactory) -> BaseException | None:
    """Send the request body under the agent's credits; return (not raise) a failure."""
    try:
        async for chunk in body():
            if chunk:
                await stream.write(chunk)
        stream.end()
    except StreamReset as exc:
        return exc
    except Exception as exc:
        stream.reset(ResetCode.CANCEL, "the request body could not be read")
        return exc
    return None


async def _cancel(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _refuse(link: Link, code: int, reason: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await link.send(GoAway(reason, message).to_frame().encode())
    with contextlib.suppress(Exception):
        await link.close(code, message[:120])
