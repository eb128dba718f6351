"""Shared fixtures: settings on SQLite and PostgreSQL, a hub on a real socket, keys."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_club.http_server import HttpProtocol, WebSocketProtocol
from inference_club.services.container import Hub
from inference_club.settings import Settings
from inference_club.surfaces.app import create_app
from inference_club.testing.s3_server import S3Server, start_s3_server
from inference_club.testing.servers import serve_app

POSTGRES_ADMIN_DSN = os.environ.get("IC_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def services_required() -> bool:
    return os.environ.get("IC_REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip with a printed reason on a developer machine; fail when CI requires services."""
    if services_required():
        pytest.fail(f"required service unavailable (IC_REQUIRE_SERVICES=1): {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


async def _postgres_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for the whole run; its plain URL."""
    name = f"ic_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        skip_or_fail(f"PostgreSQL at {POSTGRES_ADMIN_DSN} is not reachable: {exc!r}")
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    try:
        asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except Exception as exc:  # pragma: no cover - cleanup only
        print(f"could not drop {name}: {exc!r}")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """Run a test on SQLite (default file) and on PostgreSQL.

    Each PostgreSQL test starts from empty tables in the session's database.
    """
    if request.param == "sqlite":
        yield None
        return
    url: str = request.getfixturevalue("postgres_database")
    asyncio.run(_truncate_all(url))
    yield url


async def _truncate_all(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} CASCADE")
    finally:
        await conn.close()


def make_settings(data_dir: Path, database_url: str | None = None, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "online_window_s": 60.0,
        "queue_timeout_s": 2.0,
        "upstream_timeout_s": 10.0,
        "connect_timeout_s": 5.0,  # a loaded 2-core CI machine can stall a loopback connect past 1 s
        "usage_flush_interval_s": 0.2,
        "key_cache_ttl_s": 1.0,
        "breaker_cooldown_s": 2.0,
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@dataclass
class RunningHub:
    base_url: str
    hub: Hub
    settings: Settings

    async def new_user(self, name: str, *, routing: str = "own-first", admin: bool = False) -> str:
        """Create a user and return a fresh API key for it."""
        await self.hub.accounts.create_user(name, is_admin=admin, routing_preference=routing)
        return (await self.hub.accounts.create_key(name)).raw


@asynccontextmanager
async def running_hub(settings: Settings) -> AsyncIterator[RunningHub]:
    """The whole hub, built by ``create_app``, on a real loopback socket."""
    app = create_app(settings)
    async with serve_app(
        app, http=HttpProtocol, ws=WebSocketProtocol
    ) as base_url:  # the protocols `serve` runs
        yield RunningHub(base_url=base_url, hub=app.state.hub, settings=settings)


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[RunningHub]:
    async with running_hub(settings) as running:
        yield running


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3 server (moto) for the run; each test makes a bucket of its own."""
    try:
        server = start_s3_server(tmp_path_factory.mktemp("s3"))
    except (OSError, RuntimeError, TimeoutError) as exc:
        skip_or_fail(f"moto_server (moto[server]) could not start: {exc!r}")
    yield server
    server.handle.stop()
