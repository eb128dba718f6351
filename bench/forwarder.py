"""A TCP forwarder that only copies bytes: what one more process on the path costs at least.

The bench's ``floor`` path chains two of them in front of the mock engine, where the hub
and the agent stand on the hub paths: client → forwarder → forwarder → engine. What it
adds to ``direct`` is what two more processes (their wake-ups, reads and writes, on
this machine's cores) cost with no work of their own: the floor under the hub paths'
"added" columns.

Each accepted connection gets its own connection to the target; bytes go through as
they come, both ways, on uvloop (as the hub and the agent run). Prints
``ready <port>`` once listening.

Usage::

    .venv/bin/python bench/forwarder.py --target 127.0.0.1:8001 [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import cast

import uvloop


class _Side(asyncio.Protocol):
    """One end of a forwarded connection: what it receives goes out through ``peer``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # received before the other end was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()


class _Client(_Side):
    """The accepted side: connects to the target, then pipes both ways."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host = host
        self.port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, target = await loop.create_connection(_Side, self.host, self.port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        target.peer, self.peer = self, target
        for data in self.early:
            target.transport.write(data)  # type: ignore[union-attr]
        self.early.clear()


async def serve(port: int, host: str, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = await loop.create_server(lambda: _Client(host, target_port), sock=sock, backlog=4096)
    print(f"ready {sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    uvloop.run(serve(args.port, host, int(port)))


if __name__ == "__main__":
    main()
