"""Outage detection: which errors mean "the database is not there", fail-fast, one log line."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from inference_club.errors import DatabaseUnavailable
from inference_club.store.availability import DatabaseHealth, classify, describe, is_unavailable
from inference_club.store.db import Database
from tests.conftest import make_settings


def wrapped(orig: BaseException) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (wrapped(sqlite3.OperationalError("database is locked")), True),
        (wrapped(sqlite3.OperationalError("unable to open database file")), True),
        (wrapped(sqlite3.OperationalError("no such table: users")), False),
        (sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), False),
        (sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"), True),
        (DatabaseUnavailable(), True),
        (ValueError("a bug"), False),
        # An OSError raised by the caller's own code (a file store, say) is not an outage.
        (OSError("disk full"), False),
    ],
)
def test_what_counts_as_an_outage(error: BaseException, unavailable: bool) -> None:
    assert is_unavailable(error) is unavailable


def test_sqlstates_tell_an_outage_from_contention() -> None:
    class CannotConnectNow(Exception):
        sqlstate = "57P03"  # the server is starting or shutting down

    class QueryCanceled(Exception):
        sqlstate = "57014"  # PostgreSQL's statement timeout: it answers, it is busy

    class UniqueViolation(Exception):
        sqlstate = "23505"

    assert classify(wrapped(CannotConnectNow("the database system is starting up"))) == "outage"
    assert classify(wrapped(QueryCanceled("canceling statement due to statement timeout"))) == "contention"
    assert classify(wrapped(UniqueViolation("duplicate key"))) is None
    assert classify(wrapped(sqlite3.OperationalError("database is locked"))) == "contention"
    assert classify(wrapped(sqlite3.OperationalError("unable to open database file"))) == "outage"


def test_contention_answers_busy_without_declaring_an_outage() -> None:
    health = DatabaseHealth()
    with pytest.raises(DatabaseUnavailable) as raised, health.guard():
        raise wrapped(sqlite3.OperationalError("database is locked"))
    assert "busy" in raised.value.message and raised.value.status_code == 503
    assert health.available and health.outages == 0


def test_describe_is_one_short_line() -> None:
    error = wrapped(sqlite3.OperationalError("database is locked\nmore detail"))
    assert describe(error) == "OperationalError: database is locked"
    assert describe(TimeoutError()) == "TimeoutError: no answer in time"


def test_one_log_line_per_outage_and_fail_fast_while_probing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inference_club.database")
    health = DatabaseHealth(retry_after_s=3)
    gone = wrapped(sqlite3.OperationalError("unable to open database file"))
    for _ in range(3):
        with pytest.raises(DatabaseUnavailable) as raised, health.guard():
            raise gone
    assert raised.value.headers == {"Retry-After": "3"} and raised.value.status_code == 503
    assert not health.available and health.outages == 1

    with health.guard():  # the one probe let through
        with pytest.raises(DatabaseUnavailable), health.guard():
            pass  # everyone else is answered at once, without touching the database
        health.answered()
    assert health.available
    with health.guard():
        with health.guard():
            pass  # up again: no limit
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("database unavailable (OperationalError: unable to open database file)")
    assert messages[1].startswith("database available again after")


def test_a_bug_is_not_an_outage() -> None:
    health = DatabaseHealth()
    with pytest.raises(KeyError), health.guard():
        raise KeyError("x")
    assert health.available


async def test_sqlite_statements_are_bounded_by_the_busy_timeout(tmp_path: Path) -> None:
    database = Database(make_settings(tmp_path / "data", db_statement_timeout_s=0.25))
    try:
        async with database.read() as session:
            busy = (await session.execute(text("PRAGMA busy_timeout"))).scalar_one()
        assert busy == 250
    finally:
        await database.dispose()
