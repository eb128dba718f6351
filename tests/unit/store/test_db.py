"""The database wrapper: transactions commit or roll back, every session is time-bounded,
an unreachable server is an outage (503), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from inference_club.errors import DatabaseUnavailable
from inference_club.store import accounts as accounts_q
from inference_club.store.db import Database
from inference_club.testing.servers import free_port
from tests.conftest import make_settings
from tests.unit.store.conftest import Store


async def test_a_transaction_commits_on_success_and_rolls_back_on_error(store: Store) -> None:
    async with store.db.transaction() as session:
        await accounts_q.set_meta(session, key="kept", value="1")
    with pytest.raises(RuntimeError):
        async with store.db.transaction() as session:
            await accounts_q.set_meta(session, key="dropped", value="1")
            raise RuntimeError("the caller failed")
    async with store.db.read() as session:
        assert await accounts_q.get_meta(session, key="kept") == "1"
        assert await accounts_q.get_meta(session, key="dropped") is None


async def test_foreign_keys_are_enforced(store: Store) -> None:
    # SQLite only checks them with the pragma the engine sets on every connection.
    with pytest.raises(IntegrityError):
        async with store.db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO api_keys (id, user_id, name, key_hash, prefix, created_at) "
                    "VALUES ('key_x', 'usr_nobody', 'n', 'h', 'p', CURRENT_TIMESTAMP)"
                )
            )


async def test_statements_are_bounded_but_migrations_are_not(store: Store) -> None:
    bound_ms = int(store.db.statement_timeout_s * 1000)
    if store.db.is_sqlite:
        async with store.db.read() as session:
            assert (await session.execute(text("PRAGMA busy_timeout"))).scalar_one() == bound_ms
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        async with store.db.unbounded() as engine, engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one() == 600_000
    else:
        setting = text("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'")  # in ms
        async with store.db.read() as session:
            assert (await session.execute(setting)).scalar_one() == str(bound_ms)
        async with store.db.unbounded() as engine, engine.connect() as connection:
            assert (await connection.execute(setting)).scalar_one() == "0"


async def test_an_unreachable_server_is_an_outage_and_the_password_stays_out_of_repr(tmp_path: Path) -> None:
    url = f"postgresql://hub:s3cret-pw@127.0.0.1:{free_port()}/nothing"
    database = Database(make_settings(tmp_path, url, db_connect_timeout_s=1.0))
    try:
        assert "s3cret-pw" not in repr(database) and "127.0.0.1" in repr(database)
        with pytest.raises(DatabaseUnavailable):
            async with database.read() as session:
                await session.execute(text("SELECT 1"))
        assert not database.health.available
        # While it is down, other callers fail at once with the same error.
        with pytest.raises(DatabaseUnavailable):
            async with database.transaction() as session:
                await session.execute(text("SELECT 1"))
    finally:
        await database.dispose()


async def test_sqlite_makes_its_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet"
    database = Database(make_settings(data_dir))
    try:
        assert data_dir.is_dir() and database.is_sqlite
        async with database.read() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        assert (data_dir / "hub.db").exists()
    finally:
        await database.dispose()
