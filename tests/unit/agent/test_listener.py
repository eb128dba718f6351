"""The agent's listening socket and background uvicorn server, on real loopback ports."""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from inference_club.agent.listener import BackgroundServer, bind_listening_socket


async def pong(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


def config(app: Starlette, **values: object) -> uvicorn.Config:
    return uvicorn.Config(app, log_config=None, log_level="warning", timeout_graceful_shutdown=1, **values)  # type: ignore[arg-type]


def test_port_zero_binds_a_free_port_ready_for_asyncio() -> None:
    sock = bind_listening_socket("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()
        assert host == "127.0.0.1" and port > 0
        assert sock.getblocking() is False
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    finally:
        sock.close()


def test_a_port_in_use_is_said_plainly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            bind_listening_socket("127.0.0.1", port)


def test_an_unknown_host_is_said_plainly() -> None:
    with pytest.raises(OSError, match=r"cannot resolve listen host 'no-such-host\.invalid'"):
        bind_listening_socket("no-such-host.invalid", 0)


@asynccontextmanager
async def running(app: Starlette, **values: object) -> AsyncIterator[tuple[BackgroundServer, str]]:
    sock = bind_listening_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = BackgroundServer("test listener")
    await server.start(config(app, **values), sock)
    try:
        yield server, url
    finally:
        await server.stop()
        sock.close()


async def test_the_server_answers_until_stopped_and_leaves_signals_alone() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    app = Starlette(routes=[Route("/ping", pong)])
    async with running(app) as (server, url):
        assert server.running and repr(server) == "<BackgroundServer 'test listener' running=True>"
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.get(f"{url}/ping")
        assert (response.status_code, response.text) == (200, "pong")
        await server.stop()
        assert not server.running
        async with httpx.AsyncClient(trust_env=False) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{url}/ping")
    await server.stop()  # stopping twice is fine


async def test_a_server_that_fails_to_start_raises_and_closes_its_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # uvicorn cannot serve on it
    sock.bind(("127.0.0.1", 0))
    server = BackgroundServer("broken")
    with pytest.raises(ValueError, match="Stream Socket was expected"):
        await server.start(config(Starlette(), lifespan="off"), sock)
    assert sock.fileno() == -1 and not server.running
    await server.stop()  # a caller's clean-up after the failed start does not raise it again
