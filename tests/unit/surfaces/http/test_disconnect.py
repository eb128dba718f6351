"""Work whose client goes away is cancelled: before the answer (ClientDisconnect) and mid-stream (quietly).

Every test runs twice: with a server that tells of the client leaving (the hub's HTTP
protocol does), and with one that only answers ``http.disconnect`` on ``receive``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Message

from inference_club.http_server import BODY, BODY_BYTES, DISCONNECT
from inference_club.surfaces.http.disconnect import WatchedStreamingResponse, unless_disconnected

_TELLING = [False]  # set per test by the `server` fixture


class Client:
    """The request's receive side: nothing more to read until the client leaves.

    With a telling server, the request also carries the ``DISCONNECT`` extension, and
    leaving calls what was registered there.
    """

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.telling = _TELLING[0]
        self.listeners: list[Callable[[], None]] = []

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def leave(self) -> None:
        self.gone.set()
        for listener in self.listeners:
            listener()

    def _on_disconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        if self.gone.is_set():
            callback()
        else:
            self.listeners.append(callback)
        return lambda: self.listeners.remove(callback) if callback in self.listeners else None

    def request(self) -> Request:
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": []}
        if self.telling:
            scope["extensions"] = {DISCONNECT: {"on_disconnect": self._on_disconnect}}
        return Request(scope, self.receive)


@pytest.fixture(autouse=True, params=["telling", "receive only"])
def server(request: pytest.FixtureRequest) -> Iterator[None]:
    _TELLING[0] = request.param == "telling"
    yield
    _TELLING[0] = False


async def settle() -> None:
    """Let every ready task run a few steps (no waiting on the clock)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_work_that_ends_first_is_answered_as_is_and_a_later_leave_cancels_nothing() -> None:
    client = Client()
    done = PlainTextResponse("ok")

    async def work() -> Response:
        return done

    async def handle() -> int:
        assert await unless_disconnected(client.request(), work()) is done
        client.leave()
        await settle()
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.create_task(handle()) == 0


async def test_a_client_leaving_before_the_answer_cancels_the_work_and_raises_client_disconnect() -> None:
    client = Client()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> Response:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async def handle() -> int:
        with pytest.raises(ClientDisconnect):
            await unless_disconnected(client.request(), work())
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()  # the watch's cancellation was undone

    handler = asyncio.create_task(handle())
    await started.wait()
    client.leave()
    assert await handler == 0
    assert cancelled.is_set()


async def test_a_cancellation_from_elsewhere_is_not_mistaken_for_a_disconnect() -> None:
    client = Client()
    started = asyncio.Event()

    async def work() -> Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    handler = asyncio.create_task(unless_disconnected(client.request(), work()))
    await started.wait()
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler


async def test_an_error_of_the_work_propagates_and_stops_the_watch() -> None:
    client = Client()

    async def work() -> Response:
        raise LookupError("engine said no")

    async def handle() -> int:
        with pytest.raises(LookupError):
            await unless_disconnected(client.request(), work())
        client.leave()
        await settle()
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.create_task(handle()) == 0


def streaming(chunks: AsyncIterator[bytes], ran: list[str]) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        status_code=201,
        headers={"x-kind": "stream"},
        background=BackgroundTask(lambda: ran.append("background")),
    )


async def test_a_streamed_answer_is_sent_whole_under_the_watch_then_its_background_runs() -> None:
    client = Client()
    ran: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two"

    async def work() -> Response:
        return streaming(chunks(), ran)

    async def handle() -> list[Message]:
        response = await unless_disconnected(client.request(), work())
        assert isinstance(response, WatchedStreamingResponse)
        assert response.status_code == 201
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await response({"type": "http"}, client.receive, send)
        return sent

    sent = await asyncio.create_task(handle())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 201
    assert (b"x-kind", b"stream") in sent[0]["headers"]
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"one,two"
    assert ran == ["background"]


async def test_a_streamed_answer_sends_its_parts_with_the_servers_send_body_when_offered() -> None:
    client = Client()
    ran: list[str] = []
    parts: list[bytes] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"one,"
        yield b"two,"
        yield b"three"

    async def work() -> Response:
        return streaming(chunks(), ran)

    async def send_body(data: bytes) -> None:
        parts.append(data)

    async def handle() -> list[Message]:
        response = await unless_disconnected(client.request(), work())
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "extensions": {BODY: {"send_body": send_body}}}
        await response(scope, client.receive, send)
        return sent

    sent = await asyncio.create_task(handle())
    assert parts == [b"one,", b"two,", b"three"]
    start, end = sent  # the head and the end still pass the middleware; the parts do not
    assert start["type"] == "http.response.start" and start["status"] == 201
    assert (b"x-kind", b"stream") in start["headers"]
    assert end == {"type": "http.response.body", "body": b"", "more_body": False, BODY_BYTES: 13}
    assert ran == ["background"]


async def test_a_client_leaving_mid_stream_stops_the_stream_quietly_without_the_background() -> None:
    client = Client()
    ran: list[str] = []
    closed = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # the engine goes quiet
            yield b"never"
        finally:
            closed.set()

    async def work() -> Response:
        return streaming(chunks(), ran)

    async def handle() -> tuple[list[bytes], int]:
        response = await unless_disconnected(client.request(), work())
        bodies: list[bytes] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body":
                bodies.append(message.get("body", b""))
                client.leave()  # the client leaves after the first chunk

        await response({"type": "http"}, client.receive, send)  # returns, does not raise
        task = asyncio.current_task()
        assert task is not None
        return bodies, task.cancelling()

    bodies, cancelling = await asyncio.create_task(handle())
    assert bodies == [b"first"] and cancelling == 0
    assert closed.is_set() and ran == []


async def test_under_a_telling_server_the_watch_keeps_no_task() -> None:
    client = Client()
    release = asyncio.Event()

    async def work() -> Response:
        await release.wait()
        return PlainTextResponse("ok")

    async def handle() -> None:
        before = len(asyncio.all_tasks())
        watching = asyncio.create_task(unless_disconnected(client.request(), work()))
        await settle()
        # The request's own task, and a watcher task only where the server tells nothing.
        assert len(asyncio.all_tasks()) == before + 1 + (0 if client.telling else 1)
        assert len(client.listeners) == (1 if client.telling else 0)
        release.set()
        await watching
        assert client.listeners == []  # taken back once the work was done

    await asyncio.create_task(handle())
