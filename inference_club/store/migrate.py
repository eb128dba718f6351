"""Apply Alembic migrations to the configured database (``serve`` and ``migrate``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from inference_club.store.db import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def migrate(database: Database) -> None:
    """Bring the schema to the newest revision. Safe to run repeatedly."""
    async with database.unbounded() as engine, engine.begin() as connection:
        await connection.run_sync(_upgrade)
