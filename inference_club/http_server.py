"""uvicorn's HTTP/1.1 protocol, with an answer's head and first body bytes in one write.

uvicorn writes a response's head and its body in separate system calls, so the peer
wakes up (and, on a small machine, takes the core) once for the head and once more for
the body: for a relayed answer that is a wake-up per hop for nothing. Here the head is
held back until the next write of the same connection, and sent with it; when the app
sends no body in the same step of the event loop (a stream still waiting for its first
chunk), the head leaves alone at the loop's next turn, as before.

The hub and the agent's direct transport serve with :class:`HttpProtocol`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS_LINE = b"HTTP/1.1 "


class _HeadHoldingTransport:
    """A transport that keeps a response head for the write that follows it.

    Only ``write`` and the ways a connection ends are its own; everything else is the
    socket transport's. Holding any write would be correct (order is kept, and the held
    bytes leave at the loop's next turn at the latest): the test for a head only decides
    which writes wait.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif isinstance(data, bytes) and data.startswith(_STATUS_LINE) and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` writing through a :class:`_HeadHoldingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]
