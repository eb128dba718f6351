"""Tunnel transport: requests reach an agent over the WebSocket the agent opened.

The tunnels themselves are accepted and kept by
:class:`~inference_club.services.transports.tunnel_server.TunnelServer`; this side sends
requests over them. When a provider's tunnel ends (or the agent says it drains), streams
still open on it fail: before the response head with :class:`TransportUnavailable`
(the router fails over), afterwards from ``aiter_bytes``.

A provider may hold several tunnels; each request goes to the one with the fewest
open streams. When none of them is held by this process and a :class:`Relay` is set
(several hub replicas), the request goes to a replica that holds one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from inference_club.domain.http_headers import ANSWER_HEADERS_NOT_RELAYED
from inference_club.domain.providers import ProviderState
from inference_club.services.transports.base import (
    BadResponseHead,
    BodyFactory,
    TransportBusy,
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
    UpstreamResponse,
    check_response_head,
)
from inference_club.services.transports.tunnel_server import HubTunnel, TunnelServer
from inference_club.tunnel.mux import Stream, StreamReset, StreamUnavailable
from inference_club.tunnel.protocol import (
    Frame,
    ProtocolError,
    RequestHead,
    ResetCode,
    ResponseHead,
)
from inference_club.waiting import QuietTimer, cancel_and_wait_quietly


class Relay(Protocol):
    """Reaches a provider's tunnel held by another hub replica."""

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> UpstreamResponse: ...


class TunnelResponse:
    """The agent's answer on one stream: head received, body read under credits."""

    def __init__(
        self,
        tunnel: HubTunnel,
        stream: Stream,
        head: ResponseHead,
        body_task: asyncio.Task[Any] | None,
        read_timeout_s: float,
        on_done: Callable[[Stream], None],
    ) -> None:
        self._tunnel = tunnel
        self._stream = stream
        self._body_task = body_task
        self._read_timeout_s = read_timeout_s
        self._on_done = on_done
        self._closed = False
        self.status = head.status
        self.headers = [(k, v) for k, v in head.headers if k.lower() not in ANSWER_HEADERS_NOT_RELAYED]
        self.agent_error = any(k.lower() == "x-ic-agent-error" and v == "1" for k, v in head.headers)

    def __repr__(self) -> str:
        return f"<TunnelResponse {self.status} stream={self._stream.id} tunnel={self._tunnel.id}>"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        stream = self._stream
        quiet = QuietTimer(
            self._read_timeout_s,
            lambda: stream.reset(ResetCode.CANCEL, "the hub stopped waiting for the answer"),
            stream.loop,
        )
        try:
            while True:
                try:
                    if stream.ready:  # no wait to time for bytes already here
                        chunk = await stream.read()
                    else:
                        with quiet:
                            chunk = await stream.read()
                except StreamReset as exc:
                    if quiet.expired:
                        raise TransportTimeout(
                            f"provider {self._tunnel.name!r} sent nothing for {self._read_timeout_s:g}s"
                        ) from None
                    raise TransportUnavailable(f"provider {self._tunnel.name!r}: {exc}") from exc
                if chunk is None:
                    return
                yield chunk
        finally:
            quiet.cancel()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Everything before the one wait: a cancel that lands there leaves nothing undone.
        if self._body_task is not None:
            self._body_task.cancel()
        stream = self._stream
        if stream.failed is None and not stream.remote_ended:
            stream.reset(ResetCode.CANCEL, "the client went away")
        self._on_done(stream)
        if self._body_task is not None:
            await cancel_and_wait_quietly(self._body_task)


class TunnelTransport:
    """Sends requests over the agent tunnels held by this hub process's :class:`TunnelServer`."""

    name = "tunnel"

    def __init__(
        self, server: TunnelServer, *, upstream_timeout_s: float = 600.0, relay: Relay | None = None
    ) -> None:
        self.server = server
        self.upstream_timeout_s = upstream_timeout_s
        self.relay = relay
        self._turn = itertools.count()

    def __repr__(self) -> str:
        return f"<TunnelTransport {self.server!r}>"

    # ------------------------------------------------------------------ requests

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> UpstreamResponse:
        """Over a tunnel held here when there is one, else through a replica that holds one."""
        if self.relay is None or self.holds(provider.id):
            return await self.send_local(provider, request)
        try:
            return await self.relay.send(provider, request)
        except TransportUnavailable:
            if not self.holds(provider.id):
                if self._full(provider.id):  # the tunnels here are open, only full
                    raise self._busy(provider) from None
                raise
        # The agent reconnected to this replica while the relay looked for a holder.
        return await self.send_local(provider, request)

    def holds(self, provider_id: str) -> bool:
        """This process holds a tunnel of the provider that takes a new request."""
        return any(t.routable for t in self.server.tunnels(provider_id))

    async def send_local(self, provider: ProviderState, request: UpstreamRequest) -> TunnelResponse:
        """Over a tunnel this process holds (never relayed further)."""
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
        body_task: asyncio.Task[BaseException | None] | None = None
        if request.payload is None or not stream.send_whole_body(request.payload):
            body_task = asyncio.create_task(_pump_body(stream, request.body), name=f"tunnel-body-{stream.id}")
        try:
            frame = await self._wait_head(stream, body_task)
            response_head = ResponseHead.from_payload(frame)
            check_response_head(provider.name, response_head.status, response_head.headers)
        except TimeoutError:
            await self._abandon(stream, body_task)
            raise TransportTimeout(
                f"provider {provider.name!r} did not answer within {self.upstream_timeout_s:g}s"
            ) from None
        except StreamReset as exc:
            await self._abandon(stream, body_task)
            raise TransportUnavailable(f"provider {provider.name!r}: {exc}") from exc
        except BadResponseHead:
            await self._abandon(stream, body_task)
            raise
        except ProtocolError as exc:
            await self._abandon(stream, body_task)
            raise TransportUnavailable(f"provider {provider.name!r} sent a bad answer: {exc}") from exc
        except BaseException:
            await self._abandon(stream, body_task)
            raise
        return TunnelResponse(tunnel, stream, response_head, body_task, self.upstream_timeout_s, self._done)

    def _full(self, provider_id: str) -> bool:
        """A tunnel of the provider held here is open but has all the streams its agent takes."""
        return any(t.mux.accepts_streams and not t.routable for t in self.server.tunnels(provider_id))

    def _busy(self, provider: ProviderState) -> TransportBusy:
        limits = "/".join(str(t.mux.max_streams) for t in self.server.tunnels(provider.id))
        return TransportBusy(
            f"every tunnel of provider {provider.name!r} has all the streams its agent takes ({limits})"
        )

    def _open_stream(self, provider: ProviderState) -> tuple[HubTunnel, Stream]:
        group = [t for t in self.server.tunnels(provider.id) if t.routable]
        if not group:
            if self._full(provider.id):
                raise self._busy(provider)
            raise TransportUnavailable(f"provider {provider.name!r} has no open tunnel")
        turn = next(self._turn) % len(group)
        ordered = sorted(group[turn:] + group[:turn], key=lambda t: t.load)
        for tunnel in ordered:
            try:
                return tunnel, tunnel.mux.open_stream()
            except StreamUnavailable:
                continue
        raise TransportUnavailable(f"every tunnel of provider {provider.name!r} is full or closing")

    async def _wait_head(self, stream: Stream, body_task: asyncio.Task[BaseException | None] | None) -> Frame:
        # One timer on the head itself: when it fires the head fails with TimeoutError.
        timer = stream.loop.call_later(self.upstream_timeout_s, _time_out, stream.head)
        try:
            if body_task is not None:  # the body is still being sent: its failure ends the wait too
                waiters: set[asyncio.Future[Any]] = {stream.head, body_task}
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                if stream.head not in done:
                    failure = body_task.result()
                    if failure is not None and not isinstance(failure, StreamReset):
                        raise failure
            return await stream.head
        finally:
            timer.cancel()

    async def _abandon(self, stream: Stream, body_task: asyncio.Task[Any] | None) -> None:
        # Everything before the one wait: a cancel that lands there leaves nothing undone.
        if body_task is not None:
            body_task.cancel()
        stream.reset(ResetCode.CANCEL, "the hub gave up on the request")
        self._done(stream)
        if body_task is not None:
            await cancel_and_wait_quietly(body_task)

    def _done(self, stream: Stream) -> None:
        self.server.release(stream)

    async def aclose(self) -> None:
        await self.server.aclose()


def _time_out(head: asyncio.Future[Frame]) -> None:
    if not head.done():
        head.set_exception(TimeoutError())


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
