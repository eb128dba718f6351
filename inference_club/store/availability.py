"""Is the database there? Outage detection, fail-fast admission and one log line per outage.

A database call that fails because the server cannot be reached, refuses connections or
does not answer within its timeouts is an *outage*, not a bug: callers get
:class:`~inference_club.errors.DatabaseUnavailable` (503 ``busy``) instead of a traceback.
A database that answers but is too busy (SQLite's lock wait or PostgreSQL's statement
timeout ran out, no pooled connection came free) is *contention*: that call gets the
same 503, but nothing else changes.
While an outage lasts only one call at a time goes to the database (it probes whether the
database is back); every other call fails at once, so requests never queue behind
connection attempts. The first statement that completes ends the outage: no restart.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from sqlalchemy import exc as sa_exc

from inference_club.errors import DatabaseUnavailable

log = logging.getLogger("inference_club.database")

# SQLSTATE classes of an unreachable or overloaded server: 08 connection exception,
# 53 insufficient resources (too many connections), 57 operator intervention
# (57P01 shutdown, 57P03 cannot connect now; 57014 statement timeout is contention).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")
_CONTENTION_SQLSTATES = ("57014", "55P03")  # statement timeout, lock not available
_SQLITE_UNAVAILABLE = ("unable to open database file", "disk i/o error")
_SQLITE_CONTENTION = ("database is locked", "database table is locked")
_DRIVER_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite")
# asyncpg's own connection errors carry no SQLSTATE; matched by name so this module
# does not import a driver the SQLite setup never loads.
_DRIVER_CONNECTION_ERRORS = frozenset(
    {"ConnectionDoesNotExistError", "InterfaceError", "InternalClientError", "ConnectionFailureError"}
)


Failure = Literal["outage", "contention"]


def classify(error: BaseException) -> Failure | None:
    """``outage`` or ``contention`` when ``error`` (or what it wraps) says the database
    cannot be used right now; ``None`` for anything else (a bug, a constraint...)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _classify_one(current)
        if found is not None:
            return found
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return None


def is_unavailable(error: BaseException) -> bool:
    return classify(error) is not None


def _classify_one(error: BaseException) -> Failure | None:
    if isinstance(error, DatabaseUnavailable):
        return "outage"
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection came free in time
        return "contention"
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return "outage"
    if isinstance(error, (OSError, TimeoutError)):  # refused, reset, unreachable, timed out
        # ... by the driver, not a file-store error inside a transaction
        return "outage" if _raised_by_driver(error) else None
    if isinstance(error, sqlite3.OperationalError):
        message = str(error).lower()
        if message.startswith(_SQLITE_CONTENTION):
            return "contention"
        return "outage" if message.startswith(_SQLITE_UNAVAILABLE) else None
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str):
        if sqlstate in _CONTENTION_SQLSTATES:
            return "contention"
        if sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES:
            return "outage"
        return None
    if type(error).__name__ in _DRIVER_CONNECTION_ERRORS and type(error).__module__.startswith("asyncpg"):
        return "outage"
    return None


def _raised_by_driver(error: BaseException) -> bool:
    traceback = error.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(_DRIVER_MODULES):
            return True
        traceback = traceback.tb_next
    return False


def describe(error: BaseException) -> str:
    """One short line for the log: the innermost error's type and first line."""
    innermost = error
    seen: set[int] = set()
    while id(innermost) not in seen:
        seen.add(id(innermost))
        nested = getattr(innermost, "orig", None) or innermost.__cause__
        # A driver's timeout wraps the cancellation it used: the timeout is the news.
        if not isinstance(nested, BaseException) or isinstance(nested, asyncio.CancelledError):
            break
        innermost = nested
    text = str(innermost).strip().splitlines()[0] if str(innermost).strip() else ""
    if not text and isinstance(innermost, TimeoutError):
        text = "no answer in time"
    name = type(innermost).__name__
    return f"{name}: {text[:160]}" if text else name


class DatabaseHealth:
    """Outage state of one database, shared by every caller in the process."""

    def __init__(self, *, retry_after_s: int = 2) -> None:
        self.retry_after_s = retry_after_s
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.outages = 0
        self._probing = False

    def __repr__(self) -> str:
        state = "up" if self.down_since is None else f"down ({self.last_error})"
        return f"<DatabaseHealth {state} outages={self.outages}>"

    @property
    def available(self) -> bool:
        return self.down_since is None

    def unavailable_error(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(retry_after_s=self.retry_after_s)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Wrap one use of the database: admit it, and turn an outage into ``DatabaseUnavailable``."""
        probing = False
        if self.down_since is not None:
            if self._probing:
                raise self.unavailable_error()
            self._probing = probing = True
        try:
            yield
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            if failure == "contention":
                raise DatabaseUnavailable(
                    "The database is busy; retry shortly.", retry_after_s=self.retry_after_s
                ) from exc
            self.failed(exc)
            raise self.unavailable_error() from exc
        finally:
            if probing:
                self._probing = False

    def failed(self, error: BaseException) -> None:
        self.last_error = describe(error)
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.outages += 1
            log.warning(
                "database unavailable (%s); answering 503 busy until it answers again", self.last_error
            )

    def answered(self) -> None:
        """A statement completed: the database is there."""
        if self.down_since is not None:
            log.warning("database available again after %.1fs", time.monotonic() - self.down_since)
            self.down_since = None
