"""A migrated database (SQLite and PostgreSQL) and the account service on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.services.accounts import Accounts
from inference_club.store.db import Database
from inference_club.store.migrate import migrate
from tests.conftest import make_settings


@pytest.fixture
async def database(tmp_path: Path, database_url: str | None) -> AsyncIterator[Database]:
    db = Database(make_settings(tmp_path / "data", database_url))
    await migrate(db)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def accounts(database: Database) -> Accounts:
    return Accounts(database)
