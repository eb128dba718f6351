"""Trailing slashes are ignored; body bytes are counted as they arrive and stopped at the limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_club.surfaces.http import error_handlers, middleware
from inference_club.surfaces.http.middleware import BodyLimitMiddleware, TrailingSlashMiddleware

JSON_LIMIT = 100
UPLOAD_LIMIT = 1000


def limited_app() -> FastAPI:
    app = FastAPI()
    error_handlers.install(app)

    async def read(request: Request) -> dict[str, Any]:
        raw = await request.body()
        state = request.scope.get("state", {})
        return {
            "read": len(raw),
            "limit": state.get("body_limit"),
            "too_large": state.get("body_too_large"),
            "counted": state.get("body_bytes"),
        }

    for path in ("/take", "/internal/relay/p1"):
        app.add_api_route(path, read, methods=["POST", "PUT", "DELETE"])
    app.add_middleware(BodyLimitMiddleware, json_limit=JSON_LIMIT, upload_limit=UPLOAD_LIMIT)
    return app


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=limited_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def chunked(total: int, size: int = 40) -> AsyncIterator[bytes]:
    """A body without Content-Length, sent in chunks."""
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


async def test_a_body_within_the_json_limit_is_read_and_counted(http: httpx.AsyncClient) -> None:
    answer = await http.post("/take", content=b"x" * JSON_LIMIT, headers={"content-type": "application/json"})
    assert answer.json() == {
        "read": JSON_LIMIT,
        "limit": JSON_LIMIT,
        "too_large": None,
        "counted": JSON_LIMIT,
    }


async def test_a_declared_length_over_the_limit_is_noted_for_the_reader(http: httpx.AsyncClient) -> None:
    # The middleware notes it; readers (reading.py) refuse before reading a byte.
    answer = await http.post(
        "/take", content=b"x" * 10, headers={"content-type": "application/json", "content-length": "500"}
    )
    assert answer.status_code == 200 and answer.json()["too_large"] == 500


async def test_an_undeclared_body_is_stopped_with_413_once_it_passes_the_limit(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.post(
        "/take", content=chunked(JSON_LIMIT + 1), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    error = answer.json()["error"]
    assert error["type"] == "request_too_large" and str(JSON_LIMIT) in error["message"]


async def test_multipart_bodies_get_the_upload_limit(http: httpx.AsyncClient) -> None:
    multipart = {"content-type": "multipart/form-data; boundary=b"}
    within = await http.post("/take", content=chunked(UPLOAD_LIMIT), headers=multipart)
    assert within.json()["limit"] == UPLOAD_LIMIT and within.json()["read"] == UPLOAD_LIMIT
    over = await http.put("/take", content=chunked(UPLOAD_LIMIT + 1), headers=multipart)
    assert over.status_code == 413


async def test_delete_and_relayed_internal_requests_are_not_limited(http: httpx.AsyncClient) -> None:
    big = JSON_LIMIT * 3
    relayed = await http.post(
        "/internal/relay/p1", content=chunked(big), headers={"content-type": "application/json"}
    )
    assert relayed.status_code == 200 and relayed.json()["read"] == big and relayed.json()["limit"] is None
    deleted = await http.request("DELETE", "/take", content=chunked(big))
    assert deleted.status_code == 200 and deleted.json()["read"] == big


async def seen_path(path: str, kind: str = "http") -> tuple[str, bytes]:
    seen: dict[str, Any] = {}

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(path=scope["path"], raw_path=scope["raw_path"])

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    scope = {"type": kind, "path": path, "raw_path": path.encode()}
    await TrailingSlashMiddleware(inner)(scope, receive, send)
    return seen["path"], seen["raw_path"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/v1/models/", "/v1/models"), ("/v1/models", "/v1/models"), ("/", "/"), ("/a//", "/a")],
)
async def test_a_trailing_slash_is_dropped_from_path_and_raw_path(path: str, expected: str) -> None:
    assert await seen_path(path) == (expected, expected.encode())


async def test_websocket_paths_lose_their_trailing_slash_too() -> None:
    assert await seen_path("/api/inference/agent/tunnel/", "websocket") == (
        "/api/inference/agent/tunnel",
        b"/api/inference/agent/tunnel",
    )


async def test_trailing_slash_is_ignored_by_the_whole_app() -> None:
    app = FastAPI()

    @app.get("/v1/thing")
    async def thing() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(TrailingSlashMiddleware)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        answer = await http.get("/v1/thing/")
    assert answer.status_code == 200 and answer.json() == {"ok": "yes"}


# An answer decided before the body arrived (401, 429, 404) reads the body first.


class Exchange:
    """A raw ASGI exchange: the body arrives in ``parts``; it records what happened in order."""

    def __init__(
        self, parts: list[bytes], *, headers: list[tuple[bytes, bytes]], stall: bool = False
    ) -> None:
        self.parts = list(parts)
        self.headers = headers
        self.stall = stall  # after the parts, the client sends nothing more (nor leaves)
        self.events: list[str] = []
        self.answer_headers: list[tuple[bytes, bytes]] = []

    async def receive(self) -> Message:
        if not self.parts:
            if self.stall:
                await asyncio.Event().wait()
            self.events.append("disconnect")
            return {"type": "http.disconnect"}
        part = self.parts.pop(0)
        self.events.append(f"body {len(part)}")
        return {"type": "http.request", "body": part, "more_body": bool(self.parts) or self.stall}

    async def send(self, message: Message) -> None:
        self.events.append(message["type"])
        if message["type"] == "http.response.start":
            self.answer_headers = list(message.get("headers", []))

    async def run(self, app: ASGIApp) -> None:
        scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": self.headers}
        await BodyLimitMiddleware(app, json_limit=10 << 20, upload_limit=10 << 20)(
            scope, self.receive, self.send
        )

    @property
    def closes(self) -> bool:
        return (b"connection", b"close") in self.answer_headers


async def answer_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 429, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def read_then_answer(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body", False):
        pass
    await answer_at_once(scope, receive, send)


def sized(total: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(total).encode())]


async def test_an_answer_given_before_the_body_arrived_reads_the_body_first() -> None:
    exchange = Exchange([b"a" * 10, b"b" * 10], headers=sized(20))
    await exchange.run(answer_at_once)
    assert exchange.events == ["body 10", "body 10", "http.response.start", "http.response.body"]
    assert not exchange.closes  # the connection stays reusable


async def test_an_unsized_body_is_read_before_an_early_answer_too() -> None:
    exchange = Exchange([b"a", b"b", b""], headers=[(b"transfer-encoding", b"chunked")])
    await exchange.run(answer_at_once)
    assert exchange.events[:3] == ["body 1", "body 1", "body 0"] and not exchange.closes


async def test_an_app_that_read_the_body_answers_unchanged() -> None:
    exchange = Exchange([b"a" * 10, b"b" * 10], headers=sized(20))
    await exchange.run(read_then_answer)
    assert exchange.events == ["body 10", "body 10", "http.response.start", "http.response.body"]
    assert not exchange.closes


async def test_a_request_without_a_body_is_answered_at_once() -> None:
    exchange = Exchange([b""], headers=[])
    await exchange.run(answer_at_once)
    assert exchange.events == ["http.response.start", "http.response.body"] and not exchange.closes


async def test_a_body_too_big_to_read_first_closes_the_connection_after_the_answer() -> None:
    exchange = Exchange([b"a"], headers=sized(middleware.SETTLE_MAX_BYTES + 10))
    await exchange.run(answer_at_once)
    assert exchange.events == ["http.response.start", "http.response.body"]  # not a byte read
    assert exchange.closes


async def test_an_unsized_body_past_the_bound_closes_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(middleware, "SETTLE_MAX_BYTES", 15)
    exchange = Exchange([b"a" * 10, b"b" * 10, b"c" * 10], headers=[(b"transfer-encoding", b"chunked")])
    await exchange.run(answer_at_once)
    assert exchange.events == ["body 10", "body 10", "http.response.start", "http.response.body"]
    assert exchange.closes


async def test_a_body_that_stops_arriving_closes_the_connection_after_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(middleware, "SETTLE_TIMEOUT_S", 0.05)
    exchange = Exchange([b"a" * 5], headers=sized(20), stall=True)
    await exchange.run(answer_at_once)
    assert exchange.events == ["body 5", "http.response.start", "http.response.body"] and exchange.closes


async def test_a_client_that_leaves_while_the_body_is_read_gets_a_closing_answer() -> None:
    exchange = Exchange([], headers=sized(20))  # 20 bytes promised, then the client is gone
    await exchange.run(answer_at_once)
    assert exchange.events == ["disconnect", "http.response.start", "http.response.body"] and exchange.closes


async def test_an_answer_while_the_app_is_reading_the_body_closes_rather_than_read_twice() -> None:
    # Two readers of one body would each get half of it: the answer closes the connection instead.
    exchange = Exchange([b"a" * 5], headers=sized(20), stall=True)

    async def answer_while_reading(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

        async def read_on() -> Message:
            return await receive()

        reader = asyncio.create_task(read_on())
        await asyncio.sleep(0)
        await answer_at_once(scope, receive, send)
        reader.cancel()

    await exchange.run(answer_while_reading)
    assert exchange.events == ["body 5", "http.response.start", "http.response.body"] and exchange.closes
