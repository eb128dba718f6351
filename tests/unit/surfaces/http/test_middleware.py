"""Trailing slashes are ignored; body bytes are counted as they arrive and stopped at the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.types import Message, Receive, Scope, Send

from inference_club.surfaces.http import error_handlers
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
