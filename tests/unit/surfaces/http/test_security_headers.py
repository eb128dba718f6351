"""Security headers on every answer; HSTS only over HTTPS; a route's own policy is left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from inference_club.surfaces.http.security_headers import (
    DEFAULT_CSP,
    HSTS,
    SecurityHeadersMiddleware,
    came_over_https,
)


async def plain(_request: Request) -> Response:
    return PlainTextResponse("hi")


async def own_policy(_request: Request) -> Response:
    return PlainTextResponse(
        "page",
        headers={
            "content-security-policy": "default-src 'self'",
            "referrer-policy": "same-origin",
            "strict-transport-security": "max-age=60",
        },
    )


async def streamed(_request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    return StreamingResponse(chunks())


def client(base_url: str = "http://test") -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/", plain), Route("/own", own_policy), Route("/stream", streamed)])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=SecurityHeadersMiddleware(app)), base_url=base_url
    )


@pytest.mark.parametrize("path", ["/", "/stream", "/missing"])
async def test_every_answer_gets_the_defaults_and_no_hsts_over_plain_http(path: str) -> None:
    async with client() as http:
        answer = await http.get(path)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["content-security-policy"] == DEFAULT_CSP
    assert "frame-ancestors 'none'" in DEFAULT_CSP
    assert "strict-transport-security" not in answer.headers


async def test_a_streamed_body_passes_through_whole() -> None:
    async with client() as http:
        answer = await http.get("/stream")
    assert answer.text == "ab"


async def test_hsts_is_sent_over_https_and_behind_a_proxy_that_says_https() -> None:
    async with client("https://test") as http:
        assert (await http.get("/")).headers["strict-transport-security"] == HSTS
    async with client() as http:
        behind = await http.get("/", headers={"x-forwarded-proto": "https"})
        assert behind.headers["strict-transport-security"] == HSTS
        plain_proxy = await http.get("/", headers={"x-forwarded-proto": "http"})
        assert "strict-transport-security" not in plain_proxy.headers


async def test_headers_a_route_sets_itself_are_left_alone() -> None:
    async with client("https://test") as http:
        answer = await http.get("/own")
    assert answer.headers["content-security-policy"] == "default-src 'self'"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert answer.headers["strict-transport-security"] == "max-age=60"
    assert answer.headers["x-frame-options"] == "DENY"  # the rest still added


@pytest.mark.parametrize(
    ("scheme", "forwarded", "expected"),
    [
        ("https", None, True),
        ("wss", None, True),
        ("http", None, False),
        ("http", b"https", True),
        ("http", b" HTTPS , http", True),
        ("http", b"http, https", False),
        ("ws", b"", False),
    ],
)
def test_came_over_https(scheme: str, forwarded: bytes | None, expected: bool) -> None:
    headers = [(b"x-forwarded-proto", forwarded)] if forwarded is not None else []
    assert came_over_https({"type": "http", "scheme": scheme, "headers": headers}) is expected
