"""The sharded pool: requests spread over small pools, limits shared out, clean close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from inference_club.http1 import Http1Transport, LeanResponse
from inference_club.netpool import (
    DEFAULT_TRANSPORT,
    TRANSPORT_VARIABLE,
    PooledClient,
    ShardedTransport,
    pooled_client,
    pooled_transport,
    transport_kind,
)
from inference_club.testing.servers import serve_app


async def _peer(request: Request) -> PlainTextResponse:
    client = request.client
    return PlainTextResponse(f"{client.port if client else 0}")


async def test_requests_spread_over_shards_and_reuse_connections() -> None:
    app = Starlette(routes=[Route("/", _peer)])
    async with serve_app(app) as url:
        transport = ShardedTransport(limits=httpx.Limits(max_connections=8), shards=4)
        async with httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(5), trust_env=False
        ) as client:
            ports = [(await client.get(url)).text for _ in range(12)]
            # Sequential requests cycle over 4 pools, each keeping its connection alive.
            assert len(set(ports)) == 4
            answers = await asyncio.gather(*[client.get(url) for _ in range(32)])
            assert all(a.status_code == 200 for a in answers)


def test_limits_are_shared_out() -> None:
    transport = ShardedTransport(
        limits=httpx.Limits(max_connections=10, max_keepalive_connections=3), shards=4
    )
    pools = [shard._pool for shard in transport._shards]
    assert [p._max_connections for p in pools] == [3, 3, 3, 3]
    assert [p._max_keepalive_connections for p in pools] == [1, 1, 1, 1]


def test_the_shards_share_one_tls_context() -> None:
    # Building a context reads the CA bundle; one per shard made every hub start slow.
    transport = ShardedTransport(limits=httpx.Limits(max_connections=8), shards=4)
    contexts = {id(shard._pool._ssl_context) for shard in transport._shards}
    assert len(contexts) == 1


async def test_the_lean_transport_is_chosen_by_default_and_httpx_on_request() -> None:
    limits = httpx.Limits(max_connections=4)
    assert transport_kind({}) == transport_kind({TRANSPORT_VARIABLE: " "}) == DEFAULT_TRANSPORT
    assert transport_kind({TRANSPORT_VARIABLE: "HTTPX"}) == "httpx"
    lean = pooled_transport(limits=limits, shards=2, kind="lean")
    plain = pooled_transport(limits=limits, shards=2, kind="httpx")
    assert isinstance(lean, Http1Transport) and isinstance(plain, ShardedTransport)
    app = Starlette(routes=[Route("/", _peer)])
    async with serve_app(app) as url:
        for transport in (lean, plain):
            async with httpx.AsyncClient(
                transport=transport, timeout=httpx.Timeout(5), trust_env=False
            ) as client:
                assert (await client.get(url)).status_code == 200


def test_an_unknown_transport_is_refused_with_the_variable_named() -> None:
    with pytest.raises(ValueError, match=TRANSPORT_VARIABLE):
        transport_kind({TRANSPORT_VARIABLE: "h2"})


async def _set_cookie(request: Request) -> PlainTextResponse:
    answer = PlainTextResponse("set")
    answer.set_cookie("session", "alice-secret")
    return answer


async def _echo_cookie(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.headers.get("cookie", ""))


@pytest.mark.parametrize("kind", ["lean", "httpx"])
async def test_a_cookie_set_on_one_answer_is_not_sent_with_the_next_request(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client carries every member's calls: an engine's cookie must not cross between them."""
    monkeypatch.setenv(TRANSPORT_VARIABLE, kind)
    app = Starlette(routes=[Route("/set", _set_cookie), Route("/echo", _echo_cookie)])
    async with (
        serve_app(app) as url,
        pooled_client(timeout=httpx.Timeout(5), limits=httpx.Limits(max_connections=4)) as client,
    ):
        first = await client.get(f"{url}/set")
        assert first.headers["set-cookie"].startswith("session=alice-secret")  # still relayed as a header
        assert (await client.get(f"{url}/echo")).text == ""
        assert not client.cookies
        client.cookies.set("given", "anyway")  # nothing is kept, whatever is given
        client.cookies = {"given": "anyway"}
        assert (await client.get(f"{url}/echo")).text == "" and not client.cookies


async def test_answers_are_not_even_read_for_cookies(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx would build urllib stand-ins of each request and answer for the jar: per call CPU."""

    def refuse(*_args: object) -> None:
        raise AssertionError("an answer was read for cookies")

    monkeypatch.setattr(httpx.Cookies, "_CookieCompatRequest", refuse)
    app = Starlette(routes=[Route("/set", _set_cookie)])
    async with (
        serve_app(app) as url,
        pooled_client(timeout=httpx.Timeout(5), limits=httpx.Limits(max_connections=4)) as client,
    ):
        assert (await client.get(f"{url}/set")).status_code == 200


async def _echo_body(request: Request) -> PlainTextResponse:
    body = await request.body()
    if request.query_params.get("stall"):
        await asyncio.sleep(float(request.query_params["stall"]))
    return PlainTextResponse(
        body.decode(), headers={"x-chunked": request.headers.get("transfer-encoding", "-")}
    )


@pytest.mark.parametrize("kind", ["lean", "httpx"])
async def test_a_stream_opened_straight_to_the_pool(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRANSPORT_VARIABLE, kind)
    app = Starlette(routes=[Route("/echo", _echo_body, methods=["POST"])])

    async def parts() -> AsyncIterator[bytes]:
        yield b"one "
        yield b"two"

    async with (
        serve_app(app, shutdown_timeout_s=0.1) as url,
        pooled_client(timeout=httpx.Timeout(0.3), limits=httpx.Limits(max_connections=4)) as client,
    ):
        assert isinstance(client, PooledClient)
        for content, chunked in ((b"whole", "-"), (parts(), "chunked")):
            response = await client.open_stream(
                "POST", httpx.URL(f"{url}/echo"), headers={"x-any": "1"}, content=content
            )
            try:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
            assert response.status_code == 200 and response.headers.get("x-chunked") == chunked
            assert body == (b"whole" if chunked == "-" else b"one two")
            # plain http on the lean transport: no httpx objects built
            assert isinstance(response, LeanResponse if kind == "lean" else httpx.Response)
        with pytest.raises(httpx.ReadTimeout):  # the client's timeouts apply
            await client.open_stream("POST", httpx.URL(f"{url}/echo?stall=2"), headers={}, content=b"x")
