"""The cluster unit tests' Redis (the shared test database, emptied before each test) and a
migrated SQLite data directory to copy.

Without Redis a test is skipped, or fails when ``IC_REQUIRE_SERVICES=1`` (see ``tests/redis_db.py``).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from inference_club.store.db import Database
from inference_club.store.migrate import migrate
from tests.conftest import make_settings
from tests.redis_db import TEST_DB, fresh_redis_url


@pytest.fixture
async def redis_url() -> str:
    return await fresh_redis_url(TEST_DB)


async def _migrate(data_dir: Path) -> None:
    database = Database(make_settings(data_dir))
    try:
        await migrate(database)
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
def migrated_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated once per run: migrating takes longer than a test."""
    data_dir = tmp_path_factory.mktemp("migrated")
    asyncio.run(_migrate(data_dir))
    return data_dir


@pytest.fixture
def data_dir(tmp_path: Path, migrated_data_dir: Path) -> Path:
    """A migrated data directory of the test's own (SQLite)."""
    shutil.copytree(migrated_data_dir, tmp_path, dirs_exist_ok=True)
    return tmp_path
