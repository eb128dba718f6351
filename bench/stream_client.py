"""A lean client for many streamed answers at once: one connection each, raw HTTP/1.1.

The scale scenario opens a thousand streams in one burst, all from this process. With
httpx, the load generator's own work per stream (its request and response objects, its
pool, its parser in Python) took most of the time to a first byte even with no hub in
the way: the burst's floor said more about httpx than about the hub. Here a request is
bytes built once, the answer is parsed by httptools (C), and an event is counted where
its ``data:`` line ends, so the floor is the sockets and the engine.

The answer is still checked as :func:`bench.one_stream` checks it: status 200, at least
the expected number of ``data:`` events, and ``data: [DONE]`` before the answer ends.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

_ERROR_BODY_MAX = 200


class StreamFailed(Exception):
    """The stream did not arrive whole: a status other than 200, too few events, no end."""


@dataclass(frozen=True)
class StreamEndpoint:
    host: str
    port: int
    request: bytes

    @classmethod
    def for_post(cls, url: str, body: bytes, headers: dict[str, str]) -> StreamEndpoint:
        """A POST of ``body`` to ``url`` (``http://host:port/path``), asking the server to close after."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"need an http://host:port URL, got {url!r}")
        head = [
            f"POST {parts.path or '/'} HTTP/1.1",
            f"host: {parts.hostname}:{parts.port}",
            f"content-length: {len(body)}",
            "connection: close",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        return cls(parts.hostname, parts.port, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


class _StreamProtocol(asyncio.Protocol):
    """Reads one answer: its status, its SSE ``data:`` lines, its end."""

    def __init__(self, request: bytes, ended: asyncio.Future[None]) -> None:
        self.request = request
        self.ended = ended
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.first_event: float | None = None
        self.events = 0
        self.done = False
        self.partial = b""  # the start of a line whose end has not arrived
        self.error_body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(StreamFailed(f"unparsable answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(StreamFailed(f"connection lost before the answer ended ({exc or 'closed'})"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.status != 200:
            self.error_body = (self.error_body + body)[:_ERROR_BODY_MAX]
            return
        *lines, self.partial = (self.partial + body).split(b"\n")  # \n only, as SSE
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            if self.first_event is None:
                self.first_event = time.perf_counter()
            if line[5:].strip() == b"[DONE]":
                self.done = True
            else:
                self.events += 1

    def on_message_complete(self) -> None:
        if self.status != 200:
            self._end(StreamFailed(f"HTTP {self.status}: {self.error_body.decode(errors='replace')}"))
        else:
            self._end(None)

    def _end(self, error: Exception | None) -> None:
        if not self.ended.done():
            if error is None:
                self.ended.set_result(None)
            else:
                self.ended.set_exception(error)
        if self.transport is not None:
            self.transport.close()


async def read_stream(endpoint: StreamEndpoint, *, expected: int, timeout_s: float) -> tuple[float, float]:
    """Open a connection, send the request, read the answer to its end.

    Returns the seconds from the start (before connecting) to the first ``data:`` event,
    and to the answer's end. Raises :class:`StreamFailed` or ``OSError``.
    """
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[None] = loop.create_future()
    started = time.perf_counter()
    transport, stream = await loop.create_connection(
        lambda: _StreamProtocol(endpoint.request, ended), endpoint.host, endpoint.port
    )
    try:
        async with asyncio.timeout(timeout_s):
            await ended
    except TimeoutError:
        raise StreamFailed(f"no end after {timeout_s:g} s ({stream.events} events)") from None
    finally:
        transport.close()
    finished = time.perf_counter()
    if not stream.done:
        raise StreamFailed(f"stream ended without [DONE] after {stream.events} events")
    if stream.events < expected:
        raise StreamFailed(f"stream had {stream.events} data events, expected at least {expected}")
    assert stream.first_event is not None
    return stream.first_event - started, finished - started
