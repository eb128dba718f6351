"""A TCP forwarder that tests switch between working and failing, to play a broken network.

Modes:

- ``pass``: every connection is piped to the target, both ways.
- ``blackhole``: the listener still accepts, but nothing is forwarded or answered; bytes
  sent are read and dropped (a server that accepts and then hangs, or a partition).
  Connections open at the switch hang the same way.
- ``refuse``: the listener is closed (new connections are refused) and open connections
  are reset.

Leaving ``blackhole`` or ``refuse`` resets the connections that were open (after a
partition old connections are dead); new ones work again in ``pass``.

``TcpProxy`` runs in the caller's event loop; :func:`proxy_in_thread` runs one in a thread
of its own, for synchronous tests or a proxy shared by several tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Literal

Mode = Literal["pass", "blackhole", "refuse"]
_CHUNK = 65536


class _Pipe:
    """One client connection and, in ``pass`` mode, its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.frozen = False  # blackholed: never forwards again
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:  # RST, like a peer that is gone, rather than a polite FIN
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.mode: Mode = "pass"
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()

    def __repr__(self) -> str:
        return f"<TcpProxy {self.host}:{self.port} -> {self.target[0]}:{self.target[1]} {self.mode}>"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        await self._listen()

    async def stop(self) -> None:
        await self._close_listener()
        self._reset_all()

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def set_mode(self, mode: Mode) -> None:
        previous, self.mode = self.mode, mode
        if mode == previous:
            return
        if mode == "blackhole":
            for pipe in self._pipes:
                pipe.frozen = True
        else:
            self._reset_all()  # open connections do not survive the failure
        if mode == "refuse":
            await self._close_listener()
        elif self._server is None:
            await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _reset_all(self) -> None:
        for pipe in list(self._pipes):
            pipe.reset()
        self._pipes.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        pipe = _Pipe(writer)
        self._pipes.add(pipe)
        try:
            if self.mode == "pass":
                try:
                    up_reader, pipe.upstream = await asyncio.open_connection(*self.target)
                except OSError:
                    pipe.reset()
                    return
                pipe.tasks = [
                    asyncio.create_task(self._forward(reader, pipe.upstream, pipe)),
                    asyncio.create_task(self._forward(up_reader, writer, pipe)),
                ]
                await asyncio.wait(pipe.tasks, return_when=asyncio.FIRST_COMPLETED)
            else:
                pipe.frozen = True
                await self._drain(reader)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._pipes.discard(pipe)
            pipe.reset()

    @staticmethod
    async def _drain(reader: asyncio.StreamReader) -> None:
        while await reader.read(_CHUNK):
            pass

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(_CHUNK):
                if pipe.frozen:
                    continue  # read and drop: the other side hears nothing
                writer.write(data)
                await writer.drain()


class ThreadedProxy:
    """A :class:`TcpProxy` in a thread with its own event loop; methods are thread-safe."""

    def __init__(self, proxy: TcpProxy, loop: asyncio.AbstractEventLoop) -> None:
        self.proxy = proxy
        self._loop = loop

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def mode(self) -> Mode:
        return self.proxy.mode

    def set_mode(self, mode: Mode) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.set_mode(mode), self._loop).result(10)


@contextlib.contextmanager
def proxy_in_thread(
    target_host: str, target_port: int, *, host: str = "127.0.0.1"
) -> Iterator[ThreadedProxy]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="tcp-proxy", daemon=True)
    thread.start()
    proxy = TcpProxy(target_host, target_port, host=host)
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
        yield ThreadedProxy(proxy, loop)
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
