"""The TCP proxy used to play a broken database: pass, blackhole, refuse, and back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from inference_club.testing.servers import free_port
from inference_club.testing.tcp_proxy import TcpProxy, proxy_in_thread


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):  # the proxy resets what it cuts off
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def roundtrip(port: int, payload: bytes = b"ping", timeout: float = 2.0) -> bytes:
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_pass_blackhole_refuse_and_back(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        assert await roundtrip(proxy.port) == b"ping"

        # A connection open when the network fails hangs too; so do new ones.
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.set_mode("blackhole")
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read(4)
        with pytest.raises(TimeoutError):
            await roundtrip(proxy.port, timeout=0.3)  # accepted, never answered

        await proxy.set_mode("refuse")
        with pytest.raises(OSError):
            await roundtrip(proxy.port)
        with pytest.raises(ConnectionResetError):
            await reader.read(4)  # the old connection was reset
        writer.close()

        await proxy.set_mode("pass")
        assert await roundtrip(proxy.port, b"back") == b"back"


def test_a_proxy_in_its_own_thread_for_synchronous_tests() -> None:
    with proxy_in_thread("127.0.0.1", free_port()) as proxy:
        port = proxy.port
        proxy.set_mode("refuse")
        assert proxy.mode == "refuse"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        proxy.set_mode("pass")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()  # listening again, same port
        except ConnectionResetError:
            # Accepted, then reset by the proxy (its target is down) before this connect
            # looked at its socket: listening too. Not listening would be a refusal.
            pass
