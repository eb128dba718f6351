"""A migrated database on SQLite and on PostgreSQL, with two users, for the store's query tests.

Migrations run once per backend and session: each SQLite test gets a copy of a migrated
file, each PostgreSQL test the session's database with its rows deleted (cheaper than the
``TRUNCATE`` of the shared ``database_url`` fixture for a handful of rows).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.store import accounts as accounts_q
from inference_club.store.db import Database
from inference_club.store.migrate import migrate
from inference_club.store.tables import Base, User
from tests.conftest import make_settings

_MIGRATED: set[str] = set()


@dataclass(frozen=True)
class Store:
    db: Database
    alice: str
    bob: str


async def add_user(db: Database, name: str) -> str:
    async with db.transaction() as session:
        user = User(id=new_id("usr"), username=name, password_hash=None, created_at=utcnow())
        await accounts_q.add_user(session, user=user)
    return user.id


async def _migrated(data_dir: Path, database_url: str | None) -> None:
    database = Database(make_settings(data_dir, database_url))
    try:
        await migrate(database)
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest schema, copied by each test that wants one."""
    data_dir = tmp_path_factory.mktemp("migrated")
    asyncio.run(_migrated(data_dir, None))
    return data_dir / "hub.db"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, migrated_sqlite: Path) -> str | None:
    """``None`` for SQLite, else the session's PostgreSQL database."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def store(tmp_path: Path, store_url: str | None, migrated_sqlite: Path) -> AsyncIterator[Store]:
    data_dir = tmp_path / "data"
    if store_url is None:
        data_dir.mkdir()
        shutil.copyfile(migrated_sqlite, data_dir / "hub.db")
    elif store_url not in _MIGRATED:
        await _migrated(data_dir, store_url)
        _MIGRATED.add(store_url)
    database = Database(make_settings(data_dir, store_url))
    if store_url is not None:
        async with database.transaction() as session:
            for table in reversed(Base.metadata.sorted_tables):
                await session.execute(table.delete())
    try:
        yield Store(database, await add_user(database, "alice"), await add_user(database, "bob"))
    finally:
        await database.dispose()
