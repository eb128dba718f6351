"""The lean HTTP/1.1 transport: httpx's API and errors, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from inference_club import http1
from inference_club.http1 import Http1Transport, LeanHeaders, request_fields
from inference_club.testing.servers import serve_app
from tests.polling import eventually


async def _peer(request: Request) -> PlainTextResponse:
    client = request.client
    return PlainTextResponse(f"{client.port if client else 0}")


async def _echo(request: Request) -> Response:
    body = await request.body()
    return Response(
        body,
        headers={
            "x-method": request.method,
            "x-length": request.headers.get("content-length", "-"),
            "x-chunked": request.headers.get("transfer-encoding", "-"),
            "x-query": request.url.query,
        },
    )


async def _stream(request: Request) -> StreamingResponse:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(50):
            yield f"data: {i}\n\n".encode()

    return StreamingResponse(parts(), media_type="text/event-stream")


async def _slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "5")))
    return PlainTextResponse("late")


async def _trickle(request: Request) -> StreamingResponse:
    """``n`` chunks ``gap`` seconds apart, then (with ``stall``) silence for that long."""
    n, gap = int(request.query_params["n"]), float(request.query_params["gap"])
    stall = float(request.query_params.get("stall", "0"))

    async def parts() -> AsyncIterator[bytes]:
        for i in range(n):
            yield f"{i};".encode()
            await asyncio.sleep(gap)
        await asyncio.sleep(stall)

    return StreamingResponse(parts())


async def _big(request: Request) -> Response:
    return Response(b"x" * (3 * 1024 * 1024))


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route("/peer", _peer),
            Route("/echo", _echo, methods=["GET", "POST", "HEAD"]),
            Route("/stream", _stream),
            Route("/slow", _slow),
            Route("/big", _big),
            Route("/trickle", _trickle),
        ]
    )


_TLS = ssl.create_default_context()  # one for the module: loading the CA store is the slow part


def _transport(max_connections: int = 8) -> Http1Transport:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return Http1Transport(limits=limits, fallback=httpx.AsyncHTTPTransport(limits=limits, verify=_TLS))


def _client(max_connections: int = 8, timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=_transport(max_connections),
        timeout=httpx.Timeout(timeout),
        trust_env=False,
    )


async def test_sequential_requests_reuse_one_connection() -> None:
    async with serve_app(_app()) as url, _client() as client:
        ports = {(await client.get(url + "/peer")).text for _ in range(10)}
        assert len(ports) == 1


async def test_bodies_go_out_whole_with_length_or_chunked() -> None:
    async with serve_app(_app()) as url, _client() as client:
        r = await client.post(url + "/echo?a=1&b=%C3%A9", content=b"hello")
        assert (r.status_code, r.content) == (200, b"hello")
        assert r.headers["x-length"] == "5" and r.headers["x-query"] == "a=1&b=%C3%A9"

        async def parts() -> AsyncIterator[bytes]:
            for piece in (b"one ", b"", b"two ", b"three"):
                yield piece

        r = await client.post(url + "/echo", content=parts())
        assert r.content == b"one two three" and r.headers["x-chunked"] == "chunked"
        r = await client.post(url + "/echo", content=b"x" * 2_000_000)
        assert len(r.content) == 2_000_000


async def test_streamed_answers_arrive_in_full_and_large_ones_too() -> None:
    async with serve_app(_app()) as url, _client() as client:
        port = (await client.get(url + "/peer")).text
        async with client.stream("GET", url + "/stream") as r:
            text = b"".join([chunk async for chunk in r.aiter_raw()]).decode()
        assert text == "".join(f"data: {i}\n\n" for i in range(50))
        assert len((await client.get(url + "/big")).content) == 3 * 1024 * 1024
        # Both were read to their end: the one connection went back to the pool each time.
        assert (await client.get(url + "/peer")).text == port


async def test_concurrency_beyond_the_pool_waits_for_a_connection() -> None:
    async with serve_app(_app()) as url, _client(max_connections=2) as client:
        answers = await asyncio.gather(*[client.get(url + "/peer") for _ in range(20)])
        assert all(a.status_code == 200 for a in answers)
        assert len({a.text for a in answers}) <= 2


async def test_a_closed_body_drops_its_connection() -> None:
    async with serve_app(_app()) as url, _client() as client:
        async with client.stream("GET", url + "/big") as r:
            async for _ in r.aiter_raw():
                break  # abandon the rest
        first = (await client.get(url + "/peer")).text
        assert (await client.get(url + "/peer")).text == first  # a fresh connection, then reused


async def test_timeouts_and_refused_connections_are_httpx_errors() -> None:
    async with serve_app(_app(), shutdown_timeout_s=0.1) as url, _client(timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(url + "/slow?s=3")
        port = int(url.rsplit(":", 1)[1])
    async with _client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/peer")


async def test_the_read_timeout_times_each_wait_in_a_body_not_the_whole_body() -> None:
    async with serve_app(_app(), shutdown_timeout_s=0.1) as url, _client(timeout=0.3) as client:
        r = await client.get(url + "/trickle?n=12&gap=0.05")  # 0.6 s in all, never 0.3 s quiet
        assert r.content == "".join(f"{i};" for i in range(12)).encode()
        async with client.stream("GET", url + "/trickle?n=3&gap=0.05&stall=3") as r:
            received = b""
            with pytest.raises(httpx.ReadTimeout):
                async for chunk in r.aiter_raw():
                    received += chunk
        assert received == b"0;1;2;"


async def test_head_goes_to_the_fallback_transport() -> None:
    async with serve_app(_app()) as url, _client() as client:
        r = await client.head(url + "/echo")
        assert r.status_code == 200 and r.content == b""


async def _raw_server(answer: bytes) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_a_body_that_ends_with_the_connection_is_complete() -> None:
    server, url = await _raw_server(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil close")
    async with server, _client() as client:
        r = await client.get(url + "/")
        assert (r.status_code, r.text) == (200, "until close")


async def test_a_body_cut_short_is_a_protocol_error() -> None:
    server, url = await _raw_server(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
    async with server, _client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url + "/")
    server, url = await _raw_server(b"")
    async with server, _client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url + "/")
    server, url = await _raw_server(b"not http at all\r\n\r\n")
    async with server, _client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url + "/")


async def test_closing_the_transport_closes_idle_connections() -> None:
    async with serve_app(_app()) as url:
        limits = httpx.Limits(max_connections=4)
        transport = Http1Transport(
            limits=limits, fallback=httpx.AsyncHTTPTransport(limits=limits, verify=_TLS)
        )
        client = httpx.AsyncClient(transport=transport, trust_env=False)
        await asyncio.gather(*[client.get(url + "/peer") for _ in range(4)])
        assert "idle=0" not in repr(transport)
        await client.aclose()
        assert "idle=0" in repr(transport)
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(httpx.Request("GET", url + "/peer"))


async def test_an_answer_sent_before_the_body_was_read_is_the_response() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big!"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(2000):
            yield b"x" * 65536
            await asyncio.sleep(0)

    async with server, _client() as client:
        r = await client.post(url, content=endless())
        assert (r.status_code, r.content) == (413, b"too big!")


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    closers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        closers.append(writer)  # keep-alive, until the test closes it

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, _client() as client:
        assert (await client.get(url)).text == "ok"
        closers[0].close()  # the server ends the idle connection...
        await closers[0].wait_closed()
        # ...and the very next request, before the loop ran the close, gets a new one.
        assert (await client.get(url)).text == "ok"
        assert len(closers) == 2


async def test_an_answer_abandoned_before_its_end_never_goes_back_to_the_pool() -> None:
    async with serve_app(_app()) as url, _client() as client:
        async with client.stream("GET", url + "/peer") as r:
            first = await anext(r.aiter_raw())  # the whole short body is in hand, but not its end
        # A fresh connection; the abandoned one is not closed under a later request either.
        answers = [(await client.get(url + "/peer")).text for _ in range(3)]
        assert first.decode() not in answers and len(set(answers)) == 1


_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class _Scripted:
    """A raw HTTP/1.1 server on loopback: ``answer(connection, request)`` (both counted from 1)
    gives the bytes to send back, or None to hang up without answering. It keeps every
    connection open until the client closes it, whatever the answer said."""

    answer: Callable[[int, int], bytes | None]
    then_eof: bool = False  # half-close (send FIN) after each answer, as a closing server does
    cut_after: int = 0  # hang up right after answering this many requests on a connection
    requests: list[int] = field(default_factory=list)  # requests seen per connection
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.requests.append(0)
        number = len(self.requests)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.requests[number - 1] += 1
                answer = self.answer(number, self.requests[number - 1])
                if answer is None:
                    self.hung_up.set()
                    return
                writer.write(answer)
                await writer.drain()
                if self.then_eof:
                    writer.write_eof()
                if self.requests[number - 1] == self.cut_after:
                    return
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        async with server:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def test_an_answer_that_says_connection_close_ends_its_connection() -> None:
    scripted = _Scripted(
        lambda conn, req: b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    )
    async with scripted.serve() as url, _client() as client:
        assert [(await client.get(url)).text for _ in range(3)] == ["ok"] * 3
    assert scripted.requests == [1, 1, 1]


async def test_a_request_that_says_connection_close_ends_its_connection() -> None:
    scripted = _Scripted(lambda conn, req: _OK)
    async with scripted.serve() as url, _client() as client:
        for _ in range(3):
            assert (await client.get(url, headers={"connection": "close"})).text == "ok"
    assert scripted.requests == [1, 1, 1]


async def test_a_server_that_half_closes_after_answering_gets_a_new_connection() -> None:
    scripted = _Scripted(lambda conn, req: _OK, then_eof=True)
    async with scripted.serve() as url, _client() as client:
        assert [(await client.get(url)).text for _ in range(3)] == ["ok"] * 3
    assert scripted.requests == [1, 1, 1]


async def test_a_connection_closed_by_the_servers_keep_alive_timeout_is_not_reused() -> None:
    closed_idle = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(0.05):  # the keep-alive timeout
                    await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                closed_idle.set()
                break
            except asyncio.IncompleteReadError:
                break
            writer.write(_OK)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, _client() as client:
        assert (await client.get(url)).text == "ok"
        async with asyncio.timeout(5):
            await closed_idle.wait()
        assert (await client.get(url)).text == "ok"


async def test_a_request_the_server_hung_up_on_when_reused_is_sent_once_more_on_a_new_connection() -> None:
    # The server's keep-alive timeout fires as the second request arrives on the connection.
    scripted = _Scripted(lambda conn, req: _OK if req == 1 else None)
    async with scripted.serve() as url, _client() as client:
        assert (await client.get(url)).text == "ok"
        assert (await client.post(url, content=b"again")).text == "ok"
        assert scripted.requests == [2, 1]
        # Only once: when the new connection hangs up too, that is the caller's error.
        scripted.answer = lambda conn, req: None
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)
        assert scripted.requests == [2, 2, 1]


async def test_no_second_try_for_a_body_that_cannot_be_sent_again() -> None:
    scripted = _Scripted(lambda conn, req: _OK if req == 1 else None)

    async def once() -> AsyncIterator[bytes]:
        yield b"streamed"

    async with scripted.serve() as url, _client() as client:
        assert (await client.get(url)).text == "ok"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(url, content=once())
    assert scripted.requests == [2]


async def test_no_second_try_once_part_of_the_answer_arrived() -> None:
    scripted = _Scripted(lambda conn, req: _OK if req == 1 else b"HTTP/1.1 200 OK\r\ncontent-le", cut_after=2)
    async with scripted.serve() as url, _client() as client:
        assert (await client.get(url)).text == "ok"
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(url)
    assert scripted.requests == [2]


async def test_an_interim_answer_before_the_real_one_is_skipped() -> None:
    scripted = _Scripted(lambda conn, req: b"HTTP/1.1 100 Continue\r\n\r\n" + _OK)
    async with scripted.serve() as url, _client() as client:
        r = await client.post(url, content=b"body", headers={"expect": "100-continue"})
        assert (r.status_code, r.text) == (200, "ok")
        assert (await client.get(url)).text == "ok"
    assert scripted.requests == [2]


async def test_connect_write_and_pool_timeouts_are_httpx_timeouts() -> None:
    # A listener whose accept queue is full drops new connection attempts: connecting hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname())
        try:
            async with _client(timeout=0.2) as client:
                with pytest.raises(httpx.ConnectTimeout):
                    await client.get(f"http://127.0.0.1:{listener.getsockname()[1]}/")
        finally:
            for filler in fillers:
                filler.close()

    release = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, _client(timeout=0.2) as client:
        with pytest.raises(httpx.WriteTimeout):
            await client.post(url, content=b"x" * (16 << 20))
        release.set()

    async with serve_app(_app()) as url, _client(max_connections=1, timeout=0.2) as client:
        async with client.stream("GET", url + "/stream"):
            with pytest.raises(httpx.PoolTimeout):
                await client.get(url + "/peer")
        assert (await client.get(url + "/peer")).status_code == 200


async def _two_parts() -> AsyncIterator[bytes]:
    yield b"a"
    yield b"b"


@pytest.mark.parametrize("method", ["POST", "PUT", "GET", "DELETE"])
@pytest.mark.parametrize("content", [b"{}", b"", None, "stream"])
@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json", "x-request-id": "r1"},
        [(b"host", b"agent.example:9000"), (b"content-type", b"application/json")],
        [(b"Content-Length", b"2")],
        {"transfer-encoding": "chunked"},
        [(b"x-ic-model", "modèle".encode())],
    ],
)
def test_the_lean_head_carries_what_httpx_would_send(method: str, content: object, headers: object) -> None:
    url = httpx.URL("http://127.0.0.1:8080/v1/chat/completions?x=1")
    body = _two_parts() if content == "stream" else content
    expected = httpx.Request(method, url, headers=headers, content=body).headers.raw  # type: ignore[arg-type]
    assert request_fields(method, url, headers, body) == expected  # type: ignore[arg-type]


def test_lean_headers_are_looked_up_as_httpx_does() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"x-note", b"a"),
        (b"X-Note", b"b"),
        (b"x-latin", "é".encode("latin-1")),
    ]
    lean, real = LeanHeaders(raw), httpx.Headers(raw)
    for name in ("content-type", "CONTENT-TYPE", "x-note", "x-absent"):
        assert lean.get(name) == real.get(name)
    assert lean.get("x-absent", "-") == "-"
    assert lean.get("x-latin") == "é"  # latin-1, byte for byte
    assert lean.raw == raw


async def test_a_connection_it_is_done_with_is_freed_without_the_cyclic_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection's parser holds the connection's callbacks: a closed connection that
    kept its parser would wait in memory for the next full collection. (Driven through
    the transport itself: httpx's client makes each response a cycle of its own.)"""
    connections: list[weakref.ref[http1._Connection]] = []

    class Tracked(http1._Connection):
        def __init__(self, key: tuple[str, int]) -> None:
            super().__init__(key)
            connections.append(weakref.ref(self))

    async def get(transport: Http1Transport, url: str) -> bytes:
        response = await transport.handle_async_request(httpx.Request("GET", url))
        try:
            return b"".join([part async for part in response.stream])  # type: ignore[union-attr]
        finally:
            await response.aclose()

    monkeypatch.setattr(http1, "_Connection", Tracked)
    closing = _Scripted(
        lambda conn, req: b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    )
    was_on = gc.isenabled()
    gc.disable()
    try:
        async with closing.serve() as url, _transport() as transport:
            assert [await get(transport, url) for _ in range(3)] == [b"ok"] * 3  # a connection each
        async with serve_app(_app()) as url, _transport() as transport:
            assert (await get(transport, url + "/peer")).isdigit()  # kept alive, closed with the pool
        await eventually(lambda: len(connections) == 4 and all(c() is None for c in connections))
    finally:
        if was_on:
            gc.enable()
