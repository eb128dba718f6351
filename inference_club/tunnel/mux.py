"""Many streams over one tunnel connection, used by both the hub and the agent.

- **One writer.** Every frame goes through two queues drained by a single task:
  control frames (``PING``/``PONG``/``WINDOW``/``RESET``/...) before body frames. Nothing
  that reads from the link ever waits on a write, so two peers blocked on full
  socket buffers cannot deadlock each other.
- **Credits.** A sender may have at most ``window`` body bytes of a stream not yet
  consumed by the receiver; the receiver hands credit back (``WINDOW``) as its consumer
  reads. A stream whose consumer stalls stops its sender after ``window`` bytes, while
  every other stream keeps flowing; the receiver's buffer per stream never exceeds the
  window (more is a protocol error), and queued outbound body bytes are capped per
  connection.
- **Batches.** On a tunnel of version 3 or more the writer sends everything queued when
  it runs (control frames first, as always) as one WebSocket message of up to
  :data:`MAX_BATCH` bytes, and the reader splits each message back into frames: a busy
  tunnel pays one send per wake-up instead of one per frame, without waiting for more.
  The first message stays a single frame, so the hub's ``WELCOME`` travels alone.
- **Reading.** A task reads the link's messages and dispatches their frames; a link that
  can deliver (:class:`DeliveringLink`, the hub's) hands each message straight from the
  socket's read to the dispatch instead, one task switch fewer per message.
- **Liveness.** A ``PING`` goes out every ``ping_interval_s``; a peer from which no frame
  at all arrived for ``dead_after_s`` is declared dead and the connection closed.
- When the connection ends, every open stream fails with :class:`ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

from ..waiting import wait_event
from .protocol import (
    BATCH_VERSION,
    DEAD_AFTER_S,
    DEFAULT_MAX_STREAMS,
    DEFAULT_WINDOW,
    END_BIT,
    HEADER,
    MAX_DATA_CHUNK,
    MAX_FRAME_SIZE,
    PING_INTERVAL_S,
    CloseCode,
    Flag,
    Frame,
    FrameType,
    ProtocolError,
    Reset,
    ResetCode,
    decode_frame,
    decode_frames,
    window_frame,
    window_increment,
)
from .traffic import Traffic

__all__ = ["ConnectionLost", "Link", "Mux", "Stream", "StreamReset", "StreamUnavailable"]

log = logging.getLogger("inference_club.tunnel")

MAX_QUEUED_DATA = 2 * 1024 * 1024
"""Outbound body bytes queued per connection before writers wait for the socket."""
_SENT = 0  # type byte of a queued first body frame once the writer took it (no frame type is 0)
MAX_QUEUED_CONTROL = 100_000
MAX_BATCH = 256 * 1024
"""Bytes of frames per WebSocket message on a batching tunnel (never more than the peer's ``max_frame``)."""
_MAX_CREDIT = (1 << 31) - 1


class Link(Protocol):
    """One WebSocket connection, whichever library holds it."""

    traffic: Traffic
    """What crossed it (shared by a side's connections, for its metrics): the link counts
    bytes and messages, the mux and the handshake count frames."""

    async def receive(self) -> bytes | None:
        """The next binary message, or None once the peer has closed."""

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


@runtime_checkable
class DeliveringLink(Link, Protocol):
    """A link that can hand its binary messages over as it reads them."""

    def deliver_to(self, receiver: Callable[[bytes], None]) -> None:
        """Every binary message from now on to ``receiver``, in the callback that read it;
        :meth:`receive` then answers only what is not delivered (the end, a text message)."""


class StreamReset(Exception):
    """The stream ended abnormally: reset by either side, or its connection died."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class ConnectionLost(StreamReset):
    def __init__(self, message: str) -> None:
        super().__init__("connection_lost", message)


class StreamUnavailable(Exception):
    """No new stream can be opened on this connection (closed, draining or full)."""


class Stream:
    """One request/response exchange. Body bytes flow under credits in both directions."""

    def __init__(self, mux: Mux, stream_id: int, *, send_credit: int, recv_window: int) -> None:
        self.id = stream_id
        self._mux = mux
        self._send_credit = send_credit
        # Made when a writer first runs out of credit: most streams never do.
        self._credit_changed: asyncio.Event | None = None
        self._recv_window = recv_window
        self._recv_credit = recv_window
        self._ack_threshold = max(1, recv_window // 4)
        self._unacked = 0
        self._chunks: deque[bytes] = deque()
        self.buffered = 0
        """Received body bytes not yet read (never more than the receive window)."""
        self.max_buffered = 0
        self._remote_ended = False
        self._local_ended = False
        self._data_queued = False  # a DATA frame of this stream was queued
        # The first, while it may still wait with the control frames (see Mux._enqueue_data).
        self._first_data: bytearray | None = None
        self._error: StreamReset | None = None
        self._loop = mux.loop
        # The one reader's wait, when it waits: a bare future costs less than an Event per chunk.
        self._reader: asyncio.Future[None] | None = None
        self.head: asyncio.Future[Frame] = self._loop.create_future()
        """The peer's ``RESPONSE`` frame (streams this side opened)."""

    def __repr__(self) -> str:
        return (
            f"<Stream {self.id} buffered={self.buffered} credit={self._send_credit} "
            f"ended={self._local_ended}/{self._remote_ended} error={self._error}>"
        )

    @property
    def failed(self) -> StreamReset | None:
        return self._error

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def remote_ended(self) -> bool:
        return self._remote_ended

    @property
    def local_ended(self) -> bool:
        return self._local_ended

    # ------------------------------------------------------------------ sending

    def send_head(self, frame: Frame) -> None:
        """Queue this stream's ``OPEN`` or ``RESPONSE`` frame."""
        self._raise_if_failed()
        self._mux._enqueue_control(frame)
        if frame.end:
            self._local_ended = True

    async def write(self, data: bytes) -> None:
        """Send body bytes, waiting for credit; large chunks go out as several frames."""
        if self._local_ended:
            raise RuntimeError(f"stream {self.id}: write after end")
        view = memoryview(data)
        while view:
            self._raise_if_failed()
            if self._send_credit <= 0:
                if self._credit_changed is None:
                    self._credit_changed = asyncio.Event()
                self._credit_changed.clear()
                await self._credit_changed.wait()
                continue
            await self._mux._room()
            self._raise_if_failed()
            n = min(len(view), self._send_credit, self._mux.max_data)
            self._queue_data(Frame(FrameType.DATA, self.id, Flag.NONE, bytes(view[:n])))
            self._send_credit -= n
            view = view[n:]

    def send_whole_body(self, data: bytes) -> bool:
        """Queue ``data`` and the body's end as one frame when that needs no wait; else False.

        No wait means: the credit covers ``data``, one frame carries it and the
        connection's queue has room. A request body already in memory then leaves in the
        same WebSocket message as its ``OPEN``, with no task to pump it.
        """
        mux = self._mux
        if (
            self._local_ended
            or self._error is not None
            or len(data) > min(self._send_credit, mux.max_data)
            or mux._queued_data >= MAX_QUEUED_DATA
        ):
            return False
        self._local_ended = True
        self._send_credit -= len(data)
        self._queue_data(Frame(FrameType.DATA, self.id, Flag.END, data))
        return True

    def _queue_data(self, frame: Frame) -> None:
        first = not self._data_queued
        self._data_queued = True
        self._first_data = self._mux._enqueue_data(frame, first=first)

    def end(self) -> None:
        """Mark this side's body complete."""
        if self._local_ended or self._error is not None:
            return
        self._local_ended = True
        first, self._first_data = self._first_data, None
        if first is not None and first[0] == FrameType.DATA:  # not sent yet: it carries the end
            first[1] |= END_BIT
            return
        self._mux._enqueue_data(Frame(FrameType.DATA, self.id, Flag.END))

    def reset(self, code: str = ResetCode.CANCEL, message: str = "", *, after_data: bool = False) -> None:
        """Abort the stream: tell the peer (unless the connection is gone) and forget it.

        The ``RESET`` overtakes body frames still queued, unless ``after_data`` (the peer
        then gets what was sent before the failure first).
        """
        if self._error is None:
            frame = Reset(code, message).to_frame(self.id)
            if after_data:
                self._mux._enqueue_data(frame)
            else:
                self._mux._enqueue_control(frame)
            self._fail(StreamReset(code, message or "reset by this side"))
        self._mux.forget(self)

    def release(self) -> None:
        """Forget a finished stream (late frames for it are then ignored)."""
        self._mux.forget(self)

    # ------------------------------------------------------------------ receiving

    @property
    def ready(self) -> bool:
        """:meth:`read` would answer without waiting (bytes, the end or an error are here)."""
        return bool(self._chunks) or self._remote_ended or self._error is not None

    def take_whole_body(self) -> bytes | None:
        """All the body, when its end has already arrived (a request sent with its ``OPEN``
        does), else None and nothing is taken: read it with :meth:`read` then."""
        if not self._remote_ended or self._error is not None:
            return None
        body = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self.buffered = 0
        return body

    async def read(self) -> bytes | None:
        """The body bytes received so far, or None at the end. Raises :class:`StreamReset`.

        Everything buffered comes back at once (one write downstream instead of one per
        frame when the reader fell behind). Bytes that arrived before a reset are still
        returned first.
        """
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._remote_ended:
                return None
            if self._reader is not None:
                raise RuntimeError(f"stream {self.id}: a second reader")
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        if len(self._chunks) == 1:
            chunk = self._chunks.popleft()
        else:
            chunk = b"".join(self._chunks)
            self._chunks.clear()
        self.buffered -= len(chunk)
        self._unacked += len(chunk)
        if self._unacked >= self._ack_threshold and not self._remote_ended and self._error is None:
            self._mux._enqueue_control(window_frame(self.id, self._unacked))
            self._recv_credit += self._unacked
            self._unacked = 0
        return chunk

    # ------------------------------------------------------------------ called by the mux

    def _feed(self, data: bytes, end: bool) -> None:
        if self._remote_ended:
            raise ProtocolError(f"stream {self.id}: DATA after the end of the stream")
        if len(data) > self._recv_credit:
            raise ProtocolError(
                f"stream {self.id}: {len(data)} bytes exceed the credit of {self._recv_credit}"
            )
        self._recv_credit -= len(data)
        if data:
            self._chunks.append(data)
            self.buffered += len(data)
            self.max_buffered = max(self.max_buffered, self.buffered)
        if end:
            self._remote_ended = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def _add_credit(self, increment: int) -> None:
        self._send_credit += increment
        if self._send_credit > _MAX_CREDIT:
            raise ProtocolError(f"stream {self.id}: credit overflow")
        if self._credit_changed is not None:
            self._credit_changed.set()

    def _fail(self, error: StreamReset) -> None:
        if self._error is not None:
            return
        self._error = error
        self._wake_reader()
        if self._credit_changed is not None:
            self._credit_changed.set()
        if not self.head.done():
            self.head.set_exception(error)
            self.head.exception()  # retrieved: nobody may be waiting for it

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


OpenHandler = Callable[[Stream, Frame], None]
ResetHandler = Callable[[Stream], None]
ControlHandler = Callable[[Frame], None]


class Mux:
    """The streams of one connection. ``opener`` is True on the hub, which opens every stream."""

    def __init__(
        self,
        link: Link,
        *,
        opener: bool,
        recv_window: int = DEFAULT_WINDOW,
        send_window: int = DEFAULT_WINDOW,
        recv_max_frame: int = MAX_FRAME_SIZE,
        send_max_frame: int = MAX_FRAME_SIZE,
        max_streams: int = DEFAULT_MAX_STREAMS,
        ping_interval_s: float = PING_INTERVAL_S,
        dead_after_s: float = DEAD_AFTER_S,
        on_open: OpenHandler | None = None,
        on_reset: ResetHandler | None = None,
        on_control: ControlHandler | None = None,
        label: str = "tunnel",
        protocol: int = 1,
    ) -> None:
        self._link = link
        self._traffic = link.traffic
        self.protocol = protocol
        """The tunnel's negotiated version (the base protocol unless told)."""
        self.batch_size = min(MAX_BATCH, send_max_frame) if protocol >= BATCH_VERSION else 0
        """Largest message of several frames; 0: one frame per message."""
        self.messages_sent = 0
        self.opener = opener
        self.recv_window = recv_window
        self.send_window = send_window
        self.recv_max_frame = recv_max_frame
        self.send_max_frame = send_max_frame
        self.max_data = min(MAX_DATA_CHUNK, send_max_frame - HEADER.size)
        self.max_streams = max_streams
        self.ping_interval_s = ping_interval_s
        self.dead_after_s = dead_after_s
        self._on_open = on_open
        self._on_reset = on_reset
        self._on_control = on_control
        self.label = label
        self.streams: dict[int, Stream] = {}
        self._next_id = 1
        self._last_remote_id = 0
        self._control: deque[bytes | bytearray] = deque()
        self._data: deque[bytes] = deque()
        self._queued_data = 0
        self.loop = asyncio.get_running_loop()
        """Kept: on Python 3.11 every ``get_running_loop()`` is a ``getpid()`` system call."""
        self._writer_wait: asyncio.Future[None] | None = None  # the writer's, while nothing is queued
        self._writer_idle = asyncio.Event()
        self._writer_idle.set()
        self._room_free = asyncio.Event()
        self._room_free.set()
        self._close_requested = asyncio.Event()
        self._delivery_failed = False
        self.close_code: int = CloseCode.NORMAL
        self.close_reason = ""
        self.closed = False
        self.draining = False
        """This side accepts no new streams (refused with ``RESET refused``)."""
        self.peer_draining = False
        """The peer sent ``GOAWAY``: open no new streams on this connection."""
        self.last_received = time.monotonic()
        self.rtt_s: float | None = None
        self.streams_opened = 0

    def __repr__(self) -> str:
        return (
            f"<Mux {self.label} streams={len(self.streams)} closed={self.closed} "
            f"draining={self.draining} peer_draining={self.peer_draining}>"
        )

    @property
    def buffered_bytes(self) -> int:
        """Received body bytes waiting for their consumers, over all streams."""
        return sum(s.buffered for s in self.streams.values())

    @property
    def accepts_streams(self) -> bool:
        return not (self.closed or self.peer_draining or self._close_requested.is_set())

    # ------------------------------------------------------------------ streams

    def open_stream(self) -> Stream:
        if not self.accepts_streams:
            raise StreamUnavailable(f"{self.label}: the connection takes no new streams")
        if len(self.streams) >= self.max_streams:
            raise StreamUnavailable(f"{self.label}: {self.max_streams} streams already open")
        if self._next_id > 0xFFFFFFFF:
            raise StreamUnavailable(f"{self.label}: stream ids exhausted")
        stream = Stream(self, self._next_id, send_credit=self.send_window, recv_window=self.recv_window)
        self._next_id += 1
        self.streams[stream.id] = stream
        self.streams_opened += 1
        return stream

    def forget(self, stream: Stream) -> None:
        """Drop a finished stream; late frames for it are ignored."""
        self.streams.pop(stream.id, None)

    def send_control(self, frame: Frame) -> None:
        self._enqueue_control(frame)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Ask :meth:`run` to flush control frames, close the link and return."""
        if not self._close_requested.is_set():
            self.close_code = code
            self.close_reason = reason
            self._close_requested.set()

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Read, write and watch the connection until it ends; then fail every open stream."""
        tasks = [
            asyncio.create_task(self._read_loop(), name=f"{self.label}-read"),
            asyncio.create_task(self._write_loop(), name=f"{self.label}-write"),
            asyncio.create_task(self._watchdog(), name=f"{self.label}-watchdog"),
            asyncio.create_task(self._close_requested.wait(), name=f"{self.label}-close"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    self._set_close(CloseCode.GOING_AWAY, f"connection failed: {exc!r}")
            if self._close_requested.is_set() and not tasks[1].done():
                # Let GOAWAY, RESETs and last frames reach the peer before closing.
                await wait_event(self._writer_idle, 1.0)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.closed = True
            self._room_free.set()
            lost = ConnectionLost(self.close_reason or "the tunnel closed")
            for stream in list(self.streams.values()):
                stream._fail(lost)
            self.streams.clear()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._link.close(self.close_code, self.close_reason[:120])

    def _set_close(self, code: int, reason: str) -> None:
        if not self.close_reason:
            self.close_code = code
            self.close_reason = reason

    async def _read_loop(self) -> None:
        if isinstance(self._link, DeliveringLink):
            self._link.deliver_to(self._on_delivered)
        while True:
            data = await self._link.receive()
            if data is None:
                self._set_close(CloseCode.NORMAL, "the peer closed the connection")
                return
            if not self._on_message(data):
                return

    def _on_message(self, data: bytes) -> bool:
        """Dispatch the frames of one message; False after a protocol error (the end)."""
        self.last_received = time.monotonic()
        try:
            if self.batch_size:
                for frame in decode_frames(data, max_size=self.recv_max_frame):
                    self._traffic.frames_received += 1
                    self._dispatch(frame)
            else:
                self._traffic.frames_received += 1
                self._dispatch(decode_frame(data, max_size=self.recv_max_frame))
        except ProtocolError as exc:
            log.warning("%s: protocol error: %s", self.label, exc)
            self._set_close(exc.close_code, f"protocol error: {exc}")
            return False
        return True

    def _on_delivered(self, data: bytes) -> None:
        """A message the link delivered: what the read loop does with one, ending the
        connection as the loop's end would."""
        if self._delivery_failed or self.closed:
            return
        try:
            ok = self._on_message(data)
        except Exception as exc:  # a failure of ours: the connection ends, as a failed read loop's
            log.exception("%s: dispatching a message failed", self.label)
            self._set_close(CloseCode.GOING_AWAY, f"connection failed: {exc!r}")
            ok = False
        if not ok:
            self._delivery_failed = True
            self._close_requested.set()

    async def _write_loop(self) -> None:
        while True:
            if not (self._control or self._data):
                self._writer_idle.set()
                self._writer_wait = self.loop.create_future()
                try:
                    await self._writer_wait
                finally:
                    self._writer_wait = None
                continue
            self._writer_idle.clear()
            if self.batch_size and self.messages_sent:
                data = self._take_batch(self.batch_size)
            else:
                data = self._take_frame()
                self._traffic.frames_sent += 1
            if self._queued_data < MAX_QUEUED_DATA:
                self._room_free.set()
            self.messages_sent += 1
            await self._link.send(data)

    def _take_frame(self) -> bytes:
        """The next frame to send: control frames first, then body frames in their order."""
        if self._control:
            frame = self._control.popleft()
            if isinstance(frame, bytearray):  # a stream's first body frame (see _enqueue_data)
                self._queued_data -= len(frame)
                sent = bytes(frame)
                frame[0] = _SENT
                return sent
            return frame
        data = self._data.popleft()
        self._queued_data -= len(data)
        return self._merge_data(data, self.max_data) if self._data else data

    def _take_batch(self, limit: int) -> bytes:
        """Frames in the order :meth:`_take_frame` would give them, as many as fit in ``limit`` bytes.

        A frame larger than ``limit`` still goes out, alone; no body frame goes out while a
        control frame waits (a stream's ``OPEN`` precedes its ``DATA``); ``DATA`` frames of
        one stream queued together are merged as they are when sent one by one.
        """
        parts: list[bytes | bytearray] = []
        firsts: list[bytearray] = []
        size = 0
        while self._control and (not parts or size + len(self._control[0]) <= limit):
            frame = self._control.popleft()
            if isinstance(frame, bytearray):  # a stream's first body frame (see _enqueue_data)
                self._queued_data -= len(frame)
                firsts.append(frame)
            parts.append(frame)
            size += len(frame)
        while self._data and not self._control and (not parts or size + len(self._data[0]) <= limit):
            frame = self._data.popleft()
            self._queued_data -= len(frame)
            if self._data:
                room = max(len(frame), limit - size) - HEADER.size
                frame = self._merge_data(frame, min(self.max_data, room))
            parts.append(frame)
            size += len(frame)
        self._traffic.frames_sent += len(parts)
        if not firsts:
            return cast(bytes, parts[0]) if len(parts) == 1 else b"".join(parts)
        batch = b"".join(parts)
        for first in firsts:
            first[0] = _SENT  # its stream's end can no longer ride on it
        return batch

    def _merge_data(self, first: bytes, max_payload: int) -> bytes:
        """``first`` and the ``DATA`` frames of the same stream queued right after it, as one.

        A writer that fell behind then sends one WebSocket message where it would have
        sent several; the peer sees the same bytes in fewer frames (credit counts bytes).
        """
        kind, flags, _, stream_id, _ = HEADER.unpack_from(first)
        if kind != FrameType.DATA or flags & END_BIT:
            return first
        payloads = [first[HEADER.size :]]
        size = len(payloads[0])
        end = False
        while self._data and not end:
            following = self._data[0]
            kind, flags, _, next_id, length = HEADER.unpack_from(following)
            if kind != FrameType.DATA or next_id != stream_id or size + length > max_payload:
                break
            self._data.popleft()
            self._queued_data -= len(following)
            payloads.append(following[HEADER.size :])
            size += length
            end = bool(flags & END_BIT)
        if len(payloads) == 1:
            return first
        merged = Frame(FrameType.DATA, stream_id, Flag.END if end else Flag.NONE, b"".join(payloads))
        return merged.encode()

    async def _watchdog(self) -> None:
        tick = max(0.02, min(1.0, self.ping_interval_s / 2, self.dead_after_s / 4))
        last_ping = 0.0
        while True:
            now = time.monotonic()
            if now - self.last_received > self.dead_after_s:
                log.warning(
                    "%s: no frame from the peer for %.1fs: closing", self.label, now - self.last_received
                )
                self._set_close(CloseCode.PEER_SILENT, f"peer silent for {self.dead_after_s:g}s")
                return
            if now - last_ping >= self.ping_interval_s:
                self._enqueue_control(
                    Frame(FrameType.PING, 0, Flag.NONE, struct.pack("!Q", time.monotonic_ns()))
                )
                last_ping = now
            await asyncio.sleep(tick)

    # ------------------------------------------------------------------ frames in

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.type
        if kind is FrameType.PING:
            self._enqueue_control(Frame(FrameType.PONG, 0, Flag.NONE, frame.payload))
        elif kind is FrameType.PONG:
            if len(frame.payload) == 8:
                sent: int = struct.unpack("!Q", frame.payload)[0]
                self.rtt_s = max(0.0, (time.monotonic_ns() - sent) / 1e9)
        elif kind is FrameType.GOAWAY:
            self.peer_draining = True
            if self._on_control is not None:
                self._on_control(frame)
        elif kind in (FrameType.HELLO, FrameType.WELCOME, FrameType.HEARTBEAT, FrameType.PROGRESS):
            if self._on_control is None:
                raise ProtocolError(f"unexpected {kind.name}")
            self._on_control(frame)
        elif kind is FrameType.OPEN:
            self._remote_open(frame)
        else:
            self._stream_frame(frame)

    def _remote_open(self, frame: Frame) -> None:
        if self.opener or self._on_open is None:
            raise ProtocolError("OPEN from a peer that may not open streams")
        if frame.stream_id <= self._last_remote_id:
            raise ProtocolError(f"OPEN reuses stream id {frame.stream_id}")
        self._last_remote_id = frame.stream_id
        if self.draining or self._close_requested.is_set() or len(self.streams) >= self.max_streams:
            why = "the agent is shutting down" if self.draining else "too many streams"
            self._enqueue_control(Reset(ResetCode.REFUSED, why).to_frame(frame.stream_id))
            return
        stream = Stream(self, frame.stream_id, send_credit=self.send_window, recv_window=self.recv_window)
        if frame.end:
            stream._remote_ended = True
        self.streams[stream.id] = stream
        self.streams_opened += 1
        self._on_open(stream, frame)

    def _stream_frame(self, frame: Frame) -> None:
        stream = self.streams.get(frame.stream_id)
        if stream is None:
            known = (
                frame.stream_id < self._next_id if self.opener else frame.stream_id <= self._last_remote_id
            )
            if known:
                return  # a late frame for a stream that already ended here
            raise ProtocolError(f"{frame.type.name} for unknown stream {frame.stream_id}")
        kind = frame.type
        if kind is FrameType.RESPONSE:
            if not self.opener or stream.head.done():
                raise ProtocolError(f"unexpected RESPONSE on stream {stream.id}")
            stream.head.set_result(frame)
            if frame.end:
                stream._feed(b"", True)
        elif kind is FrameType.DATA:
            if self.opener and not stream.head.done():
                raise ProtocolError(f"DATA before RESPONSE on stream {stream.id}")
            stream._feed(frame.payload, frame.end)
        elif kind is FrameType.WINDOW:
            stream._add_credit(window_increment(frame))
        elif kind is FrameType.RESET:
            reset = Reset.from_frame(frame)
            stream._fail(StreamReset(reset.code, reset.message or "reset by the peer"))
            self.forget(stream)
            if self._on_reset is not None:
                self._on_reset(stream)
        else:  # pragma: no cover - decode_frame only yields known types
            raise ProtocolError(f"unexpected {kind.name}")

    # ------------------------------------------------------------------ frames out

    def _check_size(self, frame: Frame) -> bytes:
        data = frame.encode()
        if len(data) > self.send_max_frame:
            raise ProtocolError(f"{frame.type.name} frame of {len(data)} bytes exceeds the peer's limit")
        return data

    def _enqueue_control(self, frame: Frame) -> None:
        if self.closed:
            return
        if len(self._control) >= MAX_QUEUED_CONTROL:
            self._set_close(CloseCode.PROTOCOL_ERROR, "the peer does not read its frames")
            self._close_requested.set()
            return
        self._control.append(self._check_size(frame))
        self._wake_writer()

    def _enqueue_data(self, frame: Frame, *, first: bool = False) -> bytearray | None:
        """Queue a body frame; a stream's ``first`` one goes with the control frames.

        Its head (``OPEN`` or ``RESPONSE``) is a control frame, queued just before: the
        two then leave in one message, where the body would otherwise wait behind every
        other stream's queued body bytes, and the peer wake once for the pair instead of
        twice. A request's body arrives with its ``OPEN``, an answer's first bytes with
        its head. Later frames keep to the body queue, which leaves only after every
        control frame, so a stream's frames keep their order. The frame still counts
        toward :data:`MAX_QUEUED_DATA` until it leaves. (One frame per message, before
        the batching protocol, keeps the plain order.)

        Returns that first frame as queued, while its stream's end may still be marked on
        it (:meth:`Stream.end`): its type byte becomes ``_SENT`` once it is on its way.
        """
        if self.closed:
            return None
        data = self._check_size(frame)
        queued = None
        if first and self.batch_size:
            queued = bytearray(data)
            self._control.append(queued)
        else:
            self._data.append(data)
        self._queued_data += len(data)
        if self._queued_data >= MAX_QUEUED_DATA:
            self._room_free.clear()
        self._wake_writer()
        return queued

    def _wake_writer(self) -> None:
        waiter = self._writer_wait
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _room(self) -> None:
        while self._queued_data >= MAX_QUEUED_DATA and not self.closed:
            await self._room_free.wait()
