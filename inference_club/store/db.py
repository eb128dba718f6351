"""Database engine and sessions. Query functions take a session and never commit.

Every session is bounded in time: connecting (or waiting for a pooled connection) by
``db_connect_timeout_s``, each statement by ``db_statement_timeout_s`` (PostgreSQL's
``statement_timeout`` and the driver's command timeout; SQLite's busy timeout). A
database that cannot be used raises :class:`~inference_club.errors.DatabaseUnavailable`
(see ``availability.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from inference_club.settings import Settings
from inference_club.store.availability import DatabaseHealth

_CLIENT_MARGIN_S = 0.5


class Database:
    """One engine and session factory per process."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.resolved_database_url
        self.is_sqlite = self.url.startswith("sqlite")
        self.connect_timeout_s = settings.db_connect_timeout_s
        self.statement_timeout_s = settings.db_statement_timeout_s
        self.health = DatabaseHealth(retry_after_s=max(1, round(settings.db_connect_timeout_s)))
        if self.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = self._create_engine(bounded=True)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def _create_engine(self, *, bounded: bool) -> AsyncEngine:
        kwargs: dict[str, Any] = {}
        busy_timeout_s = self.statement_timeout_s if bounded else 600.0
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": busy_timeout_s}
        else:
            connect_args: dict[str, Any] = {"timeout": self.connect_timeout_s}
            if bounded:
                # The client gives up a little after the server: a live server's own
                # timeout (contention) then answers first, a silent one is an outage.
                connect_args["command_timeout"] = self.statement_timeout_s + _CLIENT_MARGIN_S
                connect_args["server_settings"] = {
                    "statement_timeout": str(int(self.statement_timeout_s * 1000))
                }
            kwargs["connect_args"] = connect_args
            if bounded:
                kwargs.update(
                    pool_pre_ping=True, pool_size=10, max_overflow=10, pool_timeout=self.connect_timeout_s
                )
            else:
                kwargs["poolclass"] = NullPool
        engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(
                engine.sync_engine, "connect", partial(_sqlite_pragmas, busy_timeout_s=busy_timeout_s)
            )
        if bounded:
            event.listen(engine.sync_engine, "after_cursor_execute", self._answered)
        return engine

    def _answered(self, *_args: Any) -> None:
        if not self.health.available:
            self.health.answered()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.health.guard():
            async with self.sessions() as session, session.begin():
                yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        with self.health.guard():
            async with self.sessions() as session:
                yield session

    @asynccontextmanager
    async def unbounded(self) -> AsyncIterator[AsyncEngine]:
        """An engine without statement timeouts, for migrations (an index build may take long)."""
        engine = self._create_engine(bounded=False)
        try:
            yield engine
        finally:
            await engine.dispose()

    async def dispose(self) -> None:
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"<Database {self.engine.url.render_as_string(hide_password=True)} {self.health!r}>"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, busy_timeout_s: float) -> None:
    # WAL lets the CLI and the hub share the file; busy_timeout waits for a lock instead
    # of failing at once, up to the statement timeout.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
