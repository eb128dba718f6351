"""A lean HTTP/1.1 transport for httpx: asyncio protocols and httptools' parser.

The hub calls agents and the agent calls engines with one ``httpx.AsyncClient``; its
default transport (httpcore over anyio, h11 in pure Python) costs more CPU per
request than the rest of the relay together. :class:`Http1Transport` keeps httpx's
client API (requests, responses, timeouts, exceptions) and does the plain ``http://``
exchange itself: one ``asyncio.Protocol`` per connection, the C parser uvicorn uses
(httptools), the request head and the first body chunk in one write, and an O(1)
keep-alive pool. Anything else (``https://``, ``HEAD``, ``CONNECT``) goes to the
fallback transport unchanged. :meth:`Http1Transport.open` is the same exchange without
httpx's request and response objects (building them cost as much as the exchange):
what the relays' pooled client uses (``netpool.PooledClient.open_stream``).

A connection goes back to the pool only after its answer was read to the end and
neither side asked to close it; an answer closed earlier ends its connection. When a
kept-alive connection drops a request before any byte of answer (the server closed it
as the request went out), the request is sent once more on a new connection, if its
body is in memory and can be sent again.

Errors are httpx's own: ``ConnectError``/``ConnectTimeout``, ``PoolTimeout``,
``WriteTimeout``/``WriteError``, ``ReadTimeout``/``ReadError`` and
``RemoteProtocolError``, as callers of the default transport expect.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, cast

import httptools
import httpx

from inference_club.waiting import QuietTimer

__all__ = ["HeaderPairs", "Http1Transport", "LeanResponse", "request_fields"]

HeaderPairs = Mapping[str, str] | Sequence[tuple[bytes, bytes]]
"""A request's headers as text (ASCII, as httpx requires) or as the bytes to send."""

_READ_HIGH_WATER = 256 * 1024  # received body bytes buffered before reading pauses
_READ_LOW_WATER = 64 * 1024


def _expire(future: asyncio.Future[None] | asyncio.Future[int], error: type[Exception], message: str) -> None:
    if not future.done():
        future.set_exception(error(message))


async def _wait(
    future: asyncio.Future[None], timeout: float | None, error: type[Exception], message: str
) -> None:
    """Wait for ``future``; after ``timeout`` seconds it fails with ``error`` (no extra task)."""
    if timeout is None:
        await future
        return
    handle = future.get_loop().call_later(timeout, _expire, future, error, message)
    try:
        await future
    finally:
        handle.cancel()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop  # set when connected
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[int] | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._interim = False
        self._framed = False  # a Content-Length or chunked body (else it ends when the server closes)
        self.keep_alive = False
        self._close_asked = False  # the request said "Connection: close"
        self.exchanges = 0
        self.received = False  # a byte of the current exchange's response arrived
        self._error: Exception | None = None
        self._wake: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        # Kept: on Python 3.11 every get_running_loop() is a getpid() system call.
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self._parser is None:  # bytes nobody asked for: the connection is unusable
            self._fail(httpx.RemoteProtocolError("unexpected data on an idle connection"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None and not self._complete and self._error is None:
            if self._head is not None and self._head.done() and not self._framed:
                self._complete = True  # a body delimited by the end of the connection
            elif self._head is not None and not self._head.done():
                self._error = httpx.RemoteProtocolError("Server disconnected without sending a response.")
            else:
                self._error = httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
        if self._head is not None and not self._head.done():
            self._head.set_exception(self._error or httpx.RemoteProtocolError("Server disconnected."))
            self._head.exception()  # retrieved: nobody may be waiting for it
        self._wakeup()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self._parser is not None and self._head is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real head follows
            self._headers = []
            self._interim = True
            return
        if status in (204, 304):
            self._framed = True
        if not self._head.done():
            self._head.set_result(status)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= _READ_HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wakeup()

    def on_message_complete(self) -> None:
        assert self._parser is not None
        if self._interim:
            self._interim = False
            self._framed = False
            return
        self._complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wakeup()

    # ------------------------------------------------------------------ the exchange

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: the reader raises it from _error as well
        self.close()
        self._wakeup()

    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def send(
        self,
        method: str,
        target: bytes,
        fields: Iterable[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes],
        write_timeout: float | None,
    ) -> None:
        """Write the request: ``target`` is its path and query, ``fields`` its header lines."""
        self._parser = httptools.HttpResponseParser(self)
        self._headers = []
        self._head = self.loop.create_future()
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._interim = False
        self._framed = False
        self._error = None
        self.exchanges += 1
        self.received = False
        self._close_asked = False
        head = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        chunked = False
        for name, value in fields:
            head += [name, b": ", value, b"\r\n"]
            lowered = name.lower()
            if lowered == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
            elif lowered == b"connection" and b"close" in value.lower():
                self._close_asked = True
        head.append(b"\r\n")
        pending = b"".join(head)
        if isinstance(body, bytes):
            if not chunked:  # the usual case: head and body (if any) in one write
                await self._write(pending + body, write_timeout)
                return
            body = _one(body)
        async for chunk in body:
            if not chunk:
                continue
            if chunked:
                chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
            await self._write(pending + chunk if pending else chunk, write_timeout)
            pending = b""
        if chunked:
            pending += b"0\r\n\r\n"
        if pending:
            await self._write(pending, write_timeout)

    async def _write(self, data: bytes, timeout: float | None) -> None:
        if self.closed or self.transport is None:
            raise self._error or httpx.WriteError("the connection closed")
        self.transport.write(data)
        if self._drain is not None:
            await _wait(self._drain, timeout, httpx.WriteTimeout, "timed out writing the request")
            if self.closed:
                raise self._error or httpx.WriteError("the connection closed")

    async def read_head(self, timeout: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._head is not None
        if self.closed and not self._head.done():
            raise self._error or httpx.RemoteProtocolError("Server disconnected without sending a response.")
        head = self._head
        if timeout is None:
            status = await head
        else:
            handle = self.loop.call_later(
                timeout, _expire, head, httpx.ReadTimeout, "timed out waiting for the response head"
            )
            try:
                status = await head
            finally:
                handle.cancel()
        return status, self._headers

    async def read(self, quiet: QuietTimer | None) -> bytes | None:
        """The next body chunk, or None once the body is complete; ``quiet`` times each wait
        (its expiry calls :meth:`time_out_read`)."""
        while not self._chunks:
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            if self.closed:
                raise httpx.ReadError("the connection closed")
            self._wake = self.loop.create_future()
            try:
                if quiet is None:
                    await self._wake
                else:
                    with quiet:
                        await self._wake
            finally:
                self._wake = None
        # Everything received so far in one piece: one write downstream, not one per packet.
        if len(self._chunks) == 1:
            chunk = self._chunks.popleft()
        else:
            chunk = b"".join(self._chunks)
            self._chunks.clear()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= _READ_LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def time_out_read(self) -> None:
        """Fail the read waiting now with a read timeout."""
        if self._wake is not None:
            _expire(self._wake, httpx.ReadTimeout, "timed out reading the response body")

    def peer_closed(self) -> bool:
        """True when an idle connection has something to read: the server's close, which the
        loop may not have handled yet (reusing it would fail the request)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError, AttributeError):  # no poll() here, or a closed socket
            return False

    @property
    def answered(self) -> bool:
        """The response head arrived (and did not fail)."""
        return self._head is not None and self._head.done() and self._head.exception() is None

    @property
    def reusable(self) -> bool:
        return (
            self._complete
            and self.keep_alive
            and not self._close_asked
            and not self.closed
            and not self._chunks
        )


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


_SIZED_METHODS = ("POST", "PUT", "PATCH")  # httpx gives these a Content-Length: 0 when bodiless


def request_fields(
    method: str,
    url: httpx.URL,
    headers: HeaderPairs,
    content: bytes | AsyncIterable[bytes] | None,
) -> list[tuple[bytes, bytes]]:
    """The header lines httpx would send for these: ``Host`` first unless given, then
    ``headers``, then the body's length or chunked framing unless given."""
    if isinstance(headers, Mapping):
        given = [(k.encode("ascii"), v.encode("ascii")) for k, v in headers.items()]
    else:
        given = list(headers)
    names = {name.lower() for name, _ in given}
    sized = b"content-length" in names or b"transfer-encoding" in names
    first: list[tuple[bytes, bytes]] = []
    if b"host" not in names:
        first.append((b"Host", url.netloc))
    if isinstance(content, bytes) and content:
        if b"content-length" not in names:
            given.append((b"Content-Length", b"%d" % len(content)))
    elif content is not None and not isinstance(content, bytes):
        if not sized:
            given.append((b"Transfer-Encoding", b"chunked"))
    elif not sized and method in _SIZED_METHODS:
        first.append((b"Content-Length", b"0"))
    return first + given if first else given


class LeanHeaders:
    """An answer's header lines as received, and a lookup by name (as ``httpx.Headers``)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get(self, key: str, default: Any = None) -> Any:
        wanted = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in self.raw if k.lower() == wanted]
        return ", ".join(values) if values else default


class LeanResponse:
    """What :meth:`Http1Transport.open` answers: status, head and the body as it comes.

    Read the body with :meth:`aiter_raw` (once) and :meth:`aclose` it, as a streamed
    ``httpx.Response``; an answer closed before its end closes its connection.
    """

    __slots__ = ("_body", "_read", "headers", "status_code")

    def __init__(self, status: int, raw: list[tuple[bytes, bytes]], body: _Body) -> None:
        self.status_code = status
        self.headers = LeanHeaders(raw)
        self._body = body
        self._read = False

    def aiter_raw(self) -> AsyncIterator[bytes]:
        if self._read:
            raise httpx.StreamConsumed()
        self._read = True
        return self._body.__aiter__()  # the body's own iterator: no generator around it

    async def aclose(self) -> None:
        await self._body.aclose()


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: Http1Transport, conn: _Connection, read_timeout: float | None) -> None:
        self._transport = transport
        self._conn = conn
        self._timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        ended = False
        # One timer for the whole body, not one per chunk.
        quiet = (
            None
            if self._timeout is None
            else QuietTimer(self._timeout, self._conn.time_out_read, self._conn.loop)
        )
        try:
            while (chunk := await self._conn.read(quiet)) is not None:
                yield chunk
            ended = True
        finally:
            if quiet is not None:
                quiet.cancel()
            # A caller that stops early often drops this generator at a ``yield``; Python
            # finalizes it later, by which time the connection may serve another exchange.
            self._release(ended)

    async def aclose(self) -> None:
        self._release(False)

    def _release(self, read_to_end: bool) -> None:
        """Hand the connection back once; only a body read to its end leaves it reusable
        (the server may still be sending the rest of any other)."""
        if self._released:
            return  # the connection is no longer ours: it may carry another exchange by now
        self._released = True
        if not read_to_end:
            self._conn.close()
        self._transport._release(self._conn)


class Http1Transport(httpx.AsyncBaseTransport):
    """Plain-HTTP/1.1 exchanges with a keep-alive pool; other requests go to ``fallback``."""

    def __init__(self, *, limits: httpx.Limits, fallback: httpx.AsyncBaseTransport) -> None:
        self._fallback = fallback
        self._max_connections = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Http1Transport active={self._active} idle={self._idle_count}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if not self.takes(request.method, url):
            return await self._fallback.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        stream = request.stream
        body: bytes | AsyncIterable[bytes]
        if isinstance(stream, httpx.ByteStream):
            body = b"".join(cast(Iterable[bytes], stream))  # in memory: can be sent again
        else:
            body = cast(AsyncIterable[bytes], stream)
        status, headers, answer = await self._round_trip(
            url, request.method, request.headers.raw, body, timeouts
        )
        return httpx.Response(
            status, headers=headers, stream=answer, extensions={"http_version": b"HTTP/1.1"}
        )

    def takes(self, method: str, url: httpx.URL) -> bool:
        """Whether :meth:`open` carries this exchange itself (else it goes to the fallback)."""
        return url.scheme == "http" and method not in ("HEAD", "CONNECT")

    async def open(
        self,
        method: str,
        url: httpx.URL,
        headers: HeaderPairs,
        content: bytes | AsyncIterable[bytes] | None,
        timeouts: Mapping[str, float | None],
    ) -> LeanResponse:
        """One exchange that :meth:`takes`, without httpx's request and response objects.

        The head gets what httpx would add: ``Host`` and, unless given, ``Content-Length``
        (or ``Transfer-Encoding: chunked`` for a streamed body). Header names and values
        given as text must be ASCII, as httpx requires.
        """
        fields = request_fields(method, url, headers, content)
        status, raw, answer = await self._round_trip(
            url, method, fields, b"" if content is None else content, timeouts
        )
        return LeanResponse(status, raw, answer)

    async def _round_trip(
        self,
        url: httpx.URL,
        method: str,
        fields: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes],
        timeouts: Mapping[str, float | None],
    ) -> tuple[int, list[tuple[bytes, bytes]], _Body]:
        key = (url.host, url.port or 80)
        target = url.raw_path
        conn = await self._acquire(key, timeouts.get("pool"), timeouts.get("connect"))
        try:
            status, headers = await self._exchange(conn, method, target, fields, body, timeouts)
        except (httpx.WriteError, httpx.RemoteProtocolError):
            # A kept-alive connection the server closed as this request went out (its
            # keep-alive timeout, a restart): it did not answer, so one more try on a new
            # connection is safe when the body can be sent again.
            if not (conn.exchanges > 1 and not conn.received and isinstance(body, bytes)):
                raise
            conn = await self._acquire(key, timeouts.get("pool"), timeouts.get("connect"), fresh=True)
            status, headers = await self._exchange(conn, method, target, fields, body, timeouts)
        return status, headers, _Body(self, conn, timeouts.get("read"))

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        target: bytes,
        fields: Iterable[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes],
        timeouts: Mapping[str, float | None],
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Send the request and read the response head; on failure the connection is closed."""
        try:
            try:
                await conn.send(method, target, fields, body, timeouts.get("write"))
            except (httpx.WriteError, httpx.RemoteProtocolError, OSError):
                # A server may answer (413, 401...) and close before the body is all sent:
                # that answer is the response.
                if not conn.answered:
                    raise
            return await conn.read_head(timeouts.get("read"))
        except BaseException as exc:
            conn.close()
            self._release(conn)
            if isinstance(exc, OSError):
                raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
            raise

    async def _acquire(
        self,
        key: tuple[str, int],
        pool_timeout: float | None,
        connect_timeout: float | None,
        *,
        fresh: bool = False,
    ) -> _Connection:
        if self._closed:
            raise httpx.ConnectError("the transport is closed")
        deadline = None if pool_timeout is None else time.monotonic() + pool_timeout
        while True:
            idle = None if fresh else self._idle.get(key)
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                self._idle_count -= 1
                expired = self._expiry is not None and now - conn.idle_since > self._expiry
                if conn.closed or expired or conn.peer_closed():
                    conn.close()
                    continue
                self._active += 1
                return conn
            if self._max_connections is None or self._active + self._idle_count < self._max_connections:
                break
            if self._idle_count:  # full of idle connections to other hosts: drop the oldest one
                self._drop_oldest_idle()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_waiter()  # woken in the instant the time ran out: pass the turn on
                raise httpx.PoolTimeout("no connection free in time") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self._active += 1
        try:
            return await self._connect(key, connect_timeout)
        except BaseException:
            self._active -= 1
            self._wake_waiter()
            raise

    async def _connect(self, key: tuple[str, int], timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(key), *key)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return conn

    def _release(self, conn: _Connection) -> None:
        self._active -= 1
        # The parser holds the connection's callbacks: kept, it would make every closed
        # connection a reference cycle, freed only by a full collection.
        conn._parser = None
        if (
            conn.reusable
            and not self._closed
            and (self._max_idle is None or self._idle_count < self._max_idle)
        ):
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.key, []).append(conn)
            self._idle_count += 1
        else:
            conn.close()
        self._wake_waiter()

    def _wake_waiter(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _drop_oldest_idle(self) -> None:
        oldest: _Connection | None = None
        for conns in self._idle.values():
            if conns and (oldest is None or conns[0].idle_since < oldest.idle_since):
                oldest = conns[0]
        if oldest is not None:
            self._idle[oldest.key].remove(oldest)
            self._idle_count -= 1
            oldest.close()

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        await self._fallback.aclose()
