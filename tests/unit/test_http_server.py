"""The hub's HTTP protocol (an answer's head leaves with its body, in one write) and its
WebSocket protocol (binary messages delivered to the route as they are read)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from inference_club.http_server import BODY, DELIVERY, DISCONNECT, MAX_HELD, HttpProtocol, WebSocketProtocol
from inference_club.testing.servers import serve_app
from tests.polling import eventually


class _Recording:
    """The socket transport, with each write it is asked for kept."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _recording_protocol(seen: list[_Recording]) -> type[HttpProtocol]:
    class RecordingProtocol(HttpProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            recording = _Recording(transport)
            seen.append(recording)
            super().connection_made(recording)  # type: ignore[arg-type]

    return RecordingProtocol


async def _whole(request: Request) -> Response:
    return JSONResponse({"answer": "é" * 10})


async def _slow_stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.5)  # the first chunk is not there when the head goes
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    return StreamingResponse(chunks(), media_type="text/event-stream")


async def _breaks(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
    raise RuntimeError("the app fails after its head")


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route("/whole", _whole),
            Route("/stream", _slow_stream),
            WebSocketRoute("/ws", _echo),
        ]
    )


async def test_a_whole_answer_is_one_write_head_and_body() -> None:
    seen: list[_Recording] = []
    async with serve_app(_app(), http=_recording_protocol(seen)) as url, httpx.AsyncClient() as client:
        for _ in range(2):  # and again on the kept-alive connection
            response = await client.get(f"{url}/whole")
            assert response.json() == {"answer": "é" * 10}
    [connection] = seen
    assert len(connection.writes) == 2
    for write in connection.writes:
        assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(response.content)


async def test_a_head_whose_body_is_not_ready_leaves_alone_at_once() -> None:
    seen: list[_Recording] = []
    async with serve_app(_app(), http=_recording_protocol(seen)) as url, httpx.AsyncClient() as client:
        async with client.stream("GET", f"{url}/stream") as response:
            assert response.status_code == 200
            [connection] = seen
            # The status is in the client's hands while the body is still being made.
            assert len(connection.writes) == 1
            assert connection.writes[0].startswith(b"HTTP/1.1 200") and connection.writes[0].endswith(
                b"\r\n\r\n"
            )
            body = await response.aread()
    assert body == b"data: 1\n\ndata: 2\n\n"
    assert len(connection.writes) == 4  # head, two chunks, the closing chunk


async def test_a_held_head_still_leaves_when_the_app_fails_after_it() -> None:
    async with serve_app(_breaks, http=HttpProtocol, lifespan="off") as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /breaks HTTP/1.1\r\nhost: x\r\n\r\n")
        async with asyncio.timeout(5):
            received = await reader.read()  # to the close
        writer.close()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n")  # the head whole, and nothing after it


async def test_websockets_upgrade_through_it() -> None:
    async with serve_app(_app(), http=HttpProtocol) as url:
        async with connect(url.replace("http://", "ws://") + "/ws") as websocket:
            await websocket.send("hello, ünïcode")
            assert await websocket.recv() == "hello, ünïcode"


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_an_upload_is_read_as_before(method: str) -> None:
    async def echo(request: Request) -> Response:
        return Response(await request.body())

    app = Starlette(routes=[Route("/echo", echo, methods=[method])])
    async with serve_app(app, http=HttpProtocol) as url, httpx.AsyncClient() as client:
        response = await client.request(method, f"{url}/echo", content=b"x" * 300_000)
    assert response.content == b"x" * 300_000


async def test_a_websocket_route_takes_binary_messages_as_they_are_read() -> None:
    delivered: list[bytes] = []
    through_receive: list[object] = []
    offered: list[bool] = []

    async def route(websocket: WebSocket) -> None:
        delivery = websocket.scope["extensions"].get(DELIVERY)
        offered.append(delivery is not None)
        await websocket.accept()
        await websocket.send_bytes(b"ready")
        await asyncio.sleep(0.2)  # the client's first message arrives, queued the ASGI way
        delivery["deliver_to"](delivered.append)
        while True:
            message = await websocket.receive()
            through_receive.append(message.get("text") or message["type"])
            if message["type"] == "websocket.disconnect":
                return

    app = Starlette(routes=[WebSocketRoute("/ws", route)])
    async with serve_app(app, http=HttpProtocol, ws=WebSocketProtocol, lifespan="off") as url:
        async with connect(url.replace("http://", "ws://") + "/ws") as websocket:
            assert await websocket.recv() == b"ready"
            await websocket.send(b"first")
            await asyncio.sleep(0.4)
            for i in range(200):
                await websocket.send(bytes([i % 256]) * (i * 97))
            await websocket.send("a text message")
            await websocket.send(b"last")
            await eventually(lambda: len(delivered) >= 202 and bool(through_receive))
    await eventually(lambda: "websocket.disconnect" in through_receive)
    assert offered == [True]
    assert delivered == [b"first", *(bytes([i % 256]) * (i * 97) for i in range(200)), b"last"]
    assert through_receive == ["a text message", "websocket.disconnect"]


async def test_a_websocket_route_sends_binary_messages_without_asgi() -> None:
    outcome: dict[str, object] = {}
    client_left = asyncio.Event()

    async def route(websocket: WebSocket) -> None:
        send_bytes = websocket.scope["extensions"][DELIVERY]["send_bytes"]
        try:
            await send_bytes(b"too early")
        except RuntimeError as exc:
            outcome["before accept"] = str(exc)
        await websocket.accept()
        await send_bytes(b"one")
        await websocket.send_bytes(b"two")  # the ASGI way in between keeps the order
        await send_bytes("ünï".encode())
        await client_left.wait()
        try:
            for _ in range(100):  # the client's close arrives meanwhile
                await send_bytes(b"after")
                await asyncio.sleep(0.02)
        except OSError as exc:
            outcome["after close"] = type(exc).__name__

    app = Starlette(routes=[WebSocketRoute("/ws", route)])
    async with serve_app(app, http=HttpProtocol, ws=WebSocketProtocol, lifespan="off") as url:
        async with connect(url.replace("http://", "ws://") + "/ws") as websocket:
            assert [await websocket.recv() for _ in range(3)] == [b"one", b"two", "ünï".encode()]
        client_left.set()
        await eventually(lambda: "after close" in outcome)
    assert outcome == {
        "before accept": "send_bytes before the WebSocket was accepted",
        "after close": "ClientDisconnected",
    }


async def test_sending_without_asgi_waits_while_the_client_reads_nothing() -> None:
    message = bytes(range(256)) * 4096  # 1 MiB
    sent: list[int] = []

    async def route(websocket: WebSocket) -> None:
        send_bytes = websocket.scope["extensions"][DELIVERY]["send_bytes"]
        await websocket.accept()
        for i in range(64):  # far more than the socket buffers hold
            await send_bytes(message)
            sent.append(i)
        await websocket.receive()  # until the client leaves

    app = Starlette(routes=[WebSocketRoute("/ws", route)])
    async with serve_app(app, http=HttpProtocol, ws=WebSocketProtocol, lifespan="off") as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await asyncio.sleep(0.5)
        assert 0 < len(sent) < 64  # the route waits for room, not the server's memory
        frame = b"\x82\x7f" + len(message).to_bytes(8, "big") + message  # unmasked, binary, 64-bit length
        for _ in range(64):
            assert await reader.readexactly(len(frame)) == frame
        assert len(sent) == 64
        writer.close()


async def test_without_delivery_a_websocket_reads_through_asgi_as_before() -> None:
    async def route(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            await websocket.send_bytes(message["bytes"][::-1])

    app = Starlette(routes=[WebSocketRoute("/ws", route)])
    async with serve_app(app, http=HttpProtocol, ws=WebSocketProtocol, lifespan="off") as url:
        async with connect(url.replace("http://", "ws://") + "/ws") as websocket:
            for i in range(50):
                await websocket.send(b"abc" * i)
                assert await websocket.recv() == (b"abc" * i)[::-1]


async def test_a_request_is_told_when_its_client_leaves_before_the_answer_is_complete() -> None:
    told: list[str] = []
    answered = asyncio.Event()

    async def route(request: Request) -> Response:
        name = request.query_params["name"]
        take_back = request.scope["extensions"][DISCONNECT]["on_disconnect"](lambda: told.append(name))
        if name == "taken back":
            take_back()
        if name == "answered":
            answered.set()
            return Response("done")
        await asyncio.sleep(30)  # the client leaves meanwhile
        return Response("late")

    app = Starlette(routes=[Route("/wait", route)])
    async with serve_app(app, http=HttpProtocol, lifespan="off", shutdown_timeout_s=0.5) as url:
        host, port = url.removeprefix("http://").split(":")
        for name in ("left", "taken back", "answered"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /wait?name={name.replace(' ', '+')} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
            if name == "answered":
                await answered.wait()
                assert (await reader.readuntil(b"done")).startswith(b"HTTP/1.1 200")
            else:
                await asyncio.sleep(0.2)  # the route has registered
            writer.close()  # the connection is lost (an answered one stays open until now)
        await eventually(lambda: told == ["left"])
        await asyncio.sleep(0.2)
    assert told == ["left"]


def _body_app(plan: list[tuple[str, bytes]], head: list[tuple[bytes, bytes]]) -> Any:
    """A raw ASGI app sending its head, then each part of ``plan`` through ``send_body``
    (``"body"``) or as an ASGI message (``"asgi"``), then the end."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        send_body = scope["extensions"][BODY]["send_body"]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        for way, data in plan:
            if way == "body":
                await send_body(data)
            else:
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


async def test_a_chunked_body_sent_past_asgi_arrives_whole_in_order_with_asgi_parts_between() -> None:
    seen: list[_Recording] = []
    plan = [("body", b"one,"), ("asgi", b"two,"), ("body", b""), ("body", "thrée".encode())]
    app = _body_app(plan, [(b"content-type", b"text/plain")])
    async with (
        serve_app(app, http=_recording_protocol(seen), lifespan="off") as url,
        httpx.AsyncClient() as client,
    ):
        for _ in range(2):  # and again on the kept-alive connection
            response = await client.get(f"{url}/")
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            assert response.content == "one,two,thrée".encode()
    [connection] = seen
    # The held head gathers the first part and leaves with the next plain write ("two,"); an
    # empty part writes nothing; a part after the head left goes at once.
    assert connection.writes[0].startswith(b"HTTP/1.1 200") and connection.writes[0].endswith(
        b"\r\n4\r\none,\r\n4\r\ntwo,\r\n"
    )
    assert len(connection.writes) == 2 * 3  # per answer: head with "one," and "two,", "thrée", the end


async def test_a_short_stream_sent_in_one_step_is_one_write() -> None:
    """Head, its parts and the end, all sent before the loop's next turn: the parts join the
    held head, and the end takes them all out in one write."""
    seen: list[_Recording] = []
    app = _body_app(
        [("body", b"data: 1\n\n"), ("body", b"data: [DONE]\n\n")], [(b"content-type", b"text/event-stream")]
    )
    async with (
        serve_app(app, http=_recording_protocol(seen), lifespan="off") as url,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(f"{url}/")
    assert response.content == b"data: 1\n\ndata: [DONE]\n\n"
    [connection] = seen
    assert len(connection.writes) == 1
    assert connection.writes[0].startswith(b"HTTP/1.1 200") and connection.writes[0].endswith(
        b"\r\n0\r\n\r\n"
    )


async def test_send_body_for_an_answer_with_a_content_length_goes_the_asgi_way() -> None:
    app = _body_app([("body", b"abc"), ("body", b"def")], [(b"content-length", b"6")])
    async with serve_app(app, http=HttpProtocol, lifespan="off") as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/")
    assert response.headers["content-length"] == "6" and "transfer-encoding" not in response.headers
    assert response.content == b"abcdef"


async def test_send_body_for_a_head_request_sends_no_body() -> None:
    app = _body_app([("body", b"abc")], [(b"transfer-encoding", b"chunked")])
    async with serve_app(app, http=HttpProtocol, lifespan="off") as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\nGET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        async with asyncio.timeout(5):
            received = await reader.read()  # both answers, to the close
        writer.close()
    head_answer, get_answer = received.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert head_answer.endswith(b"\r\n\r\n")  # no body at all after the HEAD's head
    assert get_answer.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


async def test_send_body_waits_while_the_client_reads_nothing_and_stops_sending_once_it_left() -> None:
    part = bytes(range(256)) * 4096  # 1 MiB
    sent: list[int] = []
    finished = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        send_body = scope["extensions"][BODY]["send_body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for i in range(64):  # far more than the socket buffers hold
                await send_body(part)
                sent.append(i)
        finally:
            finished.set()

    async with serve_app(app, http=HttpProtocol, lifespan="off", shutdown_timeout_s=0.5) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.5)
        assert 0 < len(sent) < 64  # the app waits for room, not the server's memory
        waiting = len(sent)
        chunk = b"100000\r\n" + part + b"\r\n"
        for _ in range(waiting):
            assert await reader.readexactly(len(chunk)) == chunk
        writer.close()  # gone: what the app still sends goes nowhere, and does not fail
        async with asyncio.timeout(5):
            await finished.wait()
    assert len(sent) == 64


async def test_a_finished_connection_is_freed_without_the_cyclic_collector() -> None:
    """The extensions in each request's scope hold no strong reference back to the request
    or the connection: were they a cycle, every connection would wait in memory (its
    protocol, transport, request and scope) for the next full collection."""
    protocols: list[weakref.ref[HttpProtocol]] = []

    class Tracked(HttpProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            protocols.append(weakref.ref(self))
            super().connection_made(transport)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        take_back = scope["extensions"][DISCONNECT]["on_disconnect"](lambda: None)
        if scope["path"] == "/kept":
            take_back = None  # an answer that never takes its callback back
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await scope["extensions"][BODY]["send_body"](b"part")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if take_back is not None:
            take_back()

    with _collector_off():
        async with serve_app(app, http=Tracked, lifespan="off") as url:
            for path in ("/", "/kept"):
                async with httpx.AsyncClient() as client:  # a connection of its own each
                    for _ in range(2):
                        assert (await client.get(url + path)).content == b"part"
            await eventually(lambda: len(protocols) == 2 and all(p() is None for p in protocols))


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


async def test_a_held_head_gathers_no_more_than_its_cap() -> None:
    seen: list[_Recording] = []
    big = b"x" * (MAX_HELD + 1)
    app = _body_app([("body", big), ("body", b"tail")], [(b"content-type", b"text/plain")])
    async with (
        serve_app(app, http=_recording_protocol(seen), lifespan="off") as url,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(f"{url}/")
    assert response.content == big + b"tail"
    [connection] = seen
    assert connection.writes[0].startswith(b"HTTP/1.1 200") and connection.writes[0].endswith(big + b"\r\n")
    assert len(connection.writes) == 3  # head with the big part at once, "tail", the end
