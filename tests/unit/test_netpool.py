"""The sharded pool: requests spread over small pools, limits shared out, clean close."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from inference_club.netpool import ShardedTransport, pooled_client
from inference_club.testing.servers import serve_app


async def _peer(request: Request) -> PlainTextResponse:
    client = request.client
    return PlainTextResponse(f"{client.port if client else 0}")


async def test_requests_spread_over_shards_and_reuse_connections() -> None:
    app = Starlette(routes=[Route("/", _peer)])
    async with serve_app(app) as url:
        client = pooled_client(timeout=httpx.Timeout(5), limits=httpx.Limits(max_connections=8), shards=4)
        async with client:
            ports = [(await client.get(url)).text for _ in range(12)]
            # Sequential requests cycle over 4 pools, each keeping its connection alive.
            assert len(set(ports)) == 4
            answers = await asyncio.gather(*[client.get(url) for _ in range(32)])
            assert all(a.status_code == 200 for a in answers)


def test_limits_are_shared_out() -> None:
    transport = ShardedTransport(limits=httpx.Limits(max_connections=10, max_keepalive_connections=3), shards=4)
    pools = [shard._pool for shard in transport._shards]
    assert [p._max_connections for p in pools] == [3, 3, 3, 3]
    assert [p._max_keepalive_connections for p in pools] == [1, 1, 1, 1]
