"""``/healthz`` and ``/readyz``: readiness names each dependency that does not answer, without hanging.

Readiness reads only the hub's database and Redis link, so the app here holds just those
two (real clients, connecting on first use) instead of a whole hub, which takes most of
a second to build.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI

from inference_club.cluster.redis_link import RedisLink
from inference_club.store.db import Database
from inference_club.surfaces.http import error_handlers, health
from inference_club.testing.tcp_proxy import TcpProxy
from tests.conftest import make_settings, skip_or_fail
from tests.redis_db import REDIS_HOST, REDIS_PORT, TEST_DB

NOBODY = "127.0.0.1:1"  # connections are refused at once


@dataclass
class ReadinessParts:
    """The parts of a hub that ``/readyz`` reads."""

    database: Database
    redis: RedisLink | None


@asynccontextmanager
async def readiness(
    data_dir: Path, database_url: str | None = None, redis_url: str | None = None, **overrides: object
) -> AsyncIterator[httpx.AsyncClient]:
    parts = ReadinessParts(
        Database(make_settings(data_dir, database_url, **overrides)),
        RedisLink(redis_url) if redis_url else None,
    )
    app = FastAPI()
    error_handlers.install(app)
    app.include_router(health.router)
    app.state.hub = parts
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            yield http
    finally:
        if parts.redis is not None:
            await parts.redis.aclose()
        await parts.database.dispose()


async def live_redis_url() -> str:
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{TEST_DB}"
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()  # only a ping: nothing is written to the shared test database
    except Exception as exc:
        skip_or_fail(f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable: {exc!r}")
    finally:
        await client.aclose()
    return url


async def test_healthz_needs_nothing(tmp_path: Path) -> None:
    async with readiness(tmp_path, f"postgresql://postgres@{NOBODY}/none") as http:
        answer = await http.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


async def test_ready_names_the_database_and_redis_when_both_answer(tmp_path: Path) -> None:
    async with readiness(tmp_path, redis_url=await live_redis_url()) as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_a_refused_database_is_503_naming_it_with_retry_after(tmp_path: Path) -> None:
    async with readiness(tmp_path, f"postgresql://postgres@{NOBODY}/none", db_connect_timeout_s=3.0) as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unavailable" and body["database"] == "unavailable"
    assert body["down"] == ["database"] and "refused" in body["errors"]["database"].lower()
    assert answer.headers["retry-after"] == "3"  # the database's own hint: its connect timeout
    assert "redis" not in body  # a single hub has no Redis to report


async def test_a_silent_redis_is_503_naming_only_redis(tmp_path: Path) -> None:
    async with readiness(tmp_path, redis_url=f"redis://{NOBODY}/0") as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    body = answer.json()
    assert (body["database"], body["redis"]) == ("ok", "unavailable")
    assert body["down"] == ["redis"] and body["errors"] == {"redis": "no answer"}
    assert answer.headers["retry-after"] == "2"


async def test_a_database_that_accepts_and_never_answers_is_reported_after_the_connect_timeout(
    tmp_path: Path,
) -> None:
    async with TcpProxy("127.0.0.1", 1) as proxy:
        await proxy.set_mode("blackhole")
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/none"
        async with readiness(tmp_path, url, db_connect_timeout_s=0.3) as http:
            answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["errors"]["database"] == "no answer within 0.3s"
