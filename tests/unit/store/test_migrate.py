"""Migrations: an empty database reaches the newest revision, the schema is what the tables
declare, and upgrading again changes nothing. (This exercises ``store/migrations/``.)"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from inference_club.store.db import Database
from inference_club.store.migrate import MIGRATIONS_DIR, migrate
from inference_club.store.tables import Base
from tests.conftest import POSTGRES_ADMIN_DSN, make_settings


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _differences(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def _check(database: Database) -> None:
    async with database.engine.connect() as connection:
        version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        differences = await connection.run_sync(_differences)
    assert version == _head()
    assert set(Base.metadata.tables) <= tables
    assert differences == []


async def test_an_empty_sqlite_database_is_migrated_to_the_tables_and_again_is_a_no_op(
    tmp_path: Path,
) -> None:
    database = Database(make_settings(tmp_path))
    try:
        await migrate(database)
        await _check(database)
        async with database.transaction() as session:
            await session.execute(text("INSERT INTO hub_meta (key, value) VALUES ('kept', 'yes')"))
        await migrate(database)  # upgrading an up-to-date database keeps its rows
        await _check(database)
        async with database.read() as session:
            assert (await session.execute(text("SELECT value FROM hub_meta"))).scalar_one() == "yes"
    finally:
        await database.dispose()


async def test_an_empty_postgres_database_reaches_the_same_schema_and_upgrades_idempotently(
    tmp_path: Path,
    postgres_database: str,  # skips (or fails in CI) when PostgreSQL is not there
) -> None:
    # A database of its own: the session's one may already be migrated by other tests.
    name = f"ic_migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        database = Database(make_settings(tmp_path, f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"))
        try:
            await migrate(database)
            await _check(database)
            await migrate(database)
            await _check(database)
        finally:
            await database.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
