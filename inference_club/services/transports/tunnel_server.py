"""The hub's end of agent tunnels: accepting connections and keeping the live ones.

:meth:`TunnelServer.serve` runs one agent connection (hello, registration, frames,
heartbeats) for the route in ``surfaces/http/tunnel.py``. While it runs the provider
is routable; when it ends (or the agent says it drains) the provider's tunnel count
drops at once. Sending requests over these tunnels is
:class:`~inference_club.services.transports.tunnel.TunnelTransport`'s job.

A provider may hold several tunnels (several agent processes with the same name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from inference_club.domain.ids import new_id
from inference_club.domain.providers import parse_heartbeat
from inference_club.errors import AuthError, DatabaseUnavailable, HubError
from inference_club.services.auth import Principal
from inference_club.services.registry import ProviderRegistry
from inference_club.tunnel.mux import Link, Mux, Stream
from inference_club.tunnel.protocol import (
    DEAD_AFTER_S,
    DEFAULT_WINDOW,
    HELLO_TIMEOUT_S,
    MAX_FRAME_SIZE,
    PING_INTERVAL_S,
    PROTOCOL_VERSION,
    CloseCode,
    Frame,
    FrameType,
    GoAway,
    Hello,
    Progress,
    ProtocolError,
    UnsupportedVersion,
    Welcome,
    decode_frame,
)
from inference_club.waiting import cancel_and_wait_quietly

log = logging.getLogger("inference_club.tunnel")

Reauthenticate = Callable[[], Awaitable[Principal]]
ProgressListener = Callable[[str, str, float, str], object]
HoldingListener = Callable[[str, bool], object]


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

    def __init__(
        self, mux: Mux, *, tunnel_id: str, provider_id: str, name: str, agent_version: str, key_id: str = ""
    ) -> None:
        self.mux = mux
        self.id = tunnel_id
        self.provider_id = provider_id
        self.key_id = key_id  # the API key the agent opened it with
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


class TunnelServer:
    """Accepts agent tunnels and holds the live ones of this hub process."""

    def __init__(
        self,
        registry: ProviderRegistry,
        *,
        heartbeat_interval_s: float = 30.0,
        window: int = DEFAULT_WINDOW,
        max_frame: int = MAX_FRAME_SIZE,
        ping_interval_s: float = PING_INTERVAL_S,
        dead_after_s: float = DEAD_AFTER_S,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
    ) -> None:
        self._registry = registry
        self.heartbeat_interval_s = heartbeat_interval_s
        self.window = window
        self.max_frame = max_frame
        self.ping_interval_s = ping_interval_s
        self.dead_after_s = dead_after_s
        self.hello_timeout_s = hello_timeout_s
        self._by_provider: dict[str, list[HubTunnel]] = {}
        self.on_progress: ProgressListener | None = None
        """Receives ``PROGRESS`` frames: (user id, request id, progress, stage)."""
        self.on_holding: HoldingListener | None = None
        """Told (provider id, holds) whenever a provider's routable tunnels here are counted again."""
        self._peak_buffered = 0

    def __repr__(self) -> str:
        return f"<TunnelServer tunnels={sum(len(t) for t in self._by_provider.values())}>"

    # ------------------------------------------------------------------ looking

    def tunnels(self, provider_id: str | None = None) -> list[HubTunnel]:
        if provider_id is not None:
            return list(self._by_provider.get(provider_id, ()))
        return [t for group in self._by_provider.values() for t in group]

    def held_provider_ids(self) -> list[str]:
        """Providers with at least one tunnel here taking new streams."""
        return [pid for pid, group in self._by_provider.items() if any(t.mux.accepts_streams for t in group)]

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

    def release(self, stream: Stream) -> None:
        """A request is done with ``stream``: keep its buffering peak for :meth:`stats`, free it."""
        self._peak_buffered = max(self._peak_buffered, stream.max_buffered)
        stream.release()

    # ------------------------------------------------------------------ connections

    async def serve(
        self,
        principal: Principal,
        link: Link,
        *,
        reauthenticate: Reauthenticate | None = None,
        peer: str = "",
    ) -> None:
        """Run one agent's tunnel until it closes: hello, registration, streams, heartbeats."""
        hello = await self._read_hello(link)
        if hello is None:
            return
        link.traffic.frames_received += 1  # the HELLO (the mux counts every later frame)
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

        protocol = min(hello.protocol, PROTOCOL_VERSION)
        mux = Mux(
            link,
            opener=True,
            protocol=protocol,
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
            mux,
            tunnel_id=tunnel_id,
            provider_id=provider.id,
            name=provider.name,
            agent_version=hello.agent_version,
            key_id=principal.key_id,
        )
        mux.send_control(
            Welcome(
                protocol=protocol,
                provider_id=provider.id,
                tunnel_id=tunnel_id,
                window=self.window,
                max_frame=self.max_frame,
                ping_interval_s=self.ping_interval_s,
                dead_after_s=self.dead_after_s,
                heartbeat_interval_s=self.heartbeat_interval_s,
            ).to_frame()
        )
        self._attach(tunnel)
        log.info(
            "tunnel %s of provider %s attached (protocol %d, agent %s%s)",
            tunnel_id,
            provider.name,
            protocol,
            hello.agent_version or "?",
            f" from {peer}" if peer else "",
        )
        try:
            await mux.run()
        finally:
            self._detach(tunnel)
            tunnel.closed.set()
            if tunnel._refresh is not None:
                await cancel_and_wait_quietly(tunnel._refresh)
            log.info("tunnel %s of provider %s closed: %s", tunnel_id, provider.name, mux.close_reason or "-")

    async def _read_hello(self, link: Link) -> Hello | None:
        try:
            async with asyncio.timeout(self.hello_timeout_s):
                raw = await link.receive()
        except TimeoutError:
            await _refuse(
                link, CloseCode.BAD_HELLO, "bad_hello", f"no HELLO within {self.hello_timeout_s:g}s"
            )
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
            log.info(
                "tunnel %s of provider %s drains: %s", tunnel.id, tunnel.name, GoAway.from_frame(frame).code
            )
            self._sync(tunnel.provider_id)
        elif frame.type is FrameType.PROGRESS:
            update = Progress.from_frame(frame)
            if self.on_progress is not None:
                self.on_progress(principal.user_id, update.request_id, update.progress, update.stage)
        elif frame.type is FrameType.HEARTBEAT:
            tunnel._pending_beat = frame.json()
            if tunnel._refresh is None or tunnel._refresh.done():
                tunnel._refresh = asyncio.create_task(self._refresh(tunnel, principal, reauthenticate))
        else:
            raise ProtocolError(f"unexpected {frame.type.name} after the hello")

    async def _refresh(
        self, tunnel: HubTunnel, principal: Principal, reauthenticate: Reauthenticate | None
    ) -> None:
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
                _close_unauthorized(tunnel)
                return
            except DatabaseUnavailable:
                pass  # logged once per outage by the database; the tunnel keeps serving
            except HubError as exc:
                log.warning("tunnel %s: heartbeat refused: %s", tunnel.id, exc.message)
            except Exception:  # pragma: no cover - keep the tunnel up on a bug
                log.exception("tunnel %s: heartbeat failed", tunnel.id)

    def key_ids(self) -> set[str]:
        """The API keys behind the open tunnels."""
        return {t.key_id for t in self.tunnels() if t.key_id}

    def close_key(self, key_id: str) -> int:
        """Close every tunnel opened with ``key_id`` (it was revoked); how many there were.

        Routing stops at once: a closing tunnel takes no new stream.
        """
        closing = [t for t in self.tunnels() if t.key_id == key_id and not t.mux.closed]
        for tunnel in closing:
            _close_unauthorized(tunnel)
            self._sync(tunnel.provider_id)
        return len(closing)

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
        count = sum(1 for t in self._by_provider.get(provider_id, ()) if t.mux.accepts_streams)
        state = self._registry.get(provider_id)
        if state is not None:
            state.tunnels = count
        if self.on_holding is not None:
            self.on_holding(provider_id, count > 0)

    async def aclose(self) -> None:
        """Tell every agent the hub goes away and close the tunnels (agents reconnect)."""
        tunnels = self.tunnels()
        for tunnel in tunnels:
            tunnel.mux.send_control(GoAway("hub_shutdown", "the hub is shutting down").to_frame())
            tunnel.mux.close(CloseCode.GOING_AWAY, "the hub is shutting down")
        if tunnels:
            await asyncio.wait([asyncio.create_task(t.closed.wait()) for t in tunnels], timeout=3.0)


def _close_unauthorized(tunnel: HubTunnel) -> None:
    tunnel.mux.send_control(GoAway("unauthorized", "the API key is no longer valid").to_frame())
    tunnel.mux.close(CloseCode.UNAUTHORIZED, "the API key is no longer valid")


async def _refuse(link: Link, code: int, reason: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await link.send(GoAway(reason, message).to_frame().encode())
    with contextlib.suppress(Exception):
        await link.close(code, message[:120])
