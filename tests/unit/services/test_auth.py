"""Key authentication from the in-memory cache, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from inference_club.errors import AuthError
from inference_club.services.accounts import Accounts
from inference_club.services.auth import KeyAuthenticator
from inference_club.services.usage import UsageRecorder
from inference_club.store.db import Database

TTL_S = 0.5


@pytest.fixture
def auth(database: Database) -> KeyAuthenticator:
    return KeyAuthenticator(database, ttl_s=TTL_S)


class StatementLog:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def clear(self) -> None:
        self.statements.clear()

    @property
    def writes(self) -> list[str]:
        return [s for s in self.statements if s.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))]


@pytest.fixture
def queries(database: Database) -> Iterator[StatementLog]:
    log = StatementLog()
    event.listen(database.engine.sync_engine, "before_cursor_execute", log)
    yield log
    event.remove(database.engine.sync_engine, "before_cursor_execute", log)


async def _key(accounts: Accounts, username: str = "alice", **user: Any) -> tuple[str, str]:
    await accounts.create_user(username, **user)
    created = await accounts.create_key(username)
    return created.raw, created.key.id


async def test_valid_key_gives_the_principal(accounts: Accounts, auth: KeyAuthenticator) -> None:
    raw, key_id = await _key(accounts, is_admin=True, routing_preference="any")
    principal = await auth.authenticate(f"Bearer {raw}")
    assert principal.username == "alice"
    assert principal.key_id == key_id
    assert principal.user_id.startswith("usr_")
    assert principal.is_admin is True
    assert principal.routing_preference == "any"
    assert (await auth.authenticate(f"bearer   {raw}  ")).key_id == key_id  # scheme is case-insensitive


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer ic_unknown", "ic_nobearer"],
)
async def test_missing_malformed_or_unknown_keys_are_refused(
    accounts: Accounts, auth: KeyAuthenticator, header: str | None
) -> None:
    await _key(accounts)
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(header)
    assert caught.value.status_code == 401
    assert set(caught.value.body()) == {"detail", "error"}


async def test_cache_hit_does_no_database_query(
    accounts: Accounts, auth: KeyAuthenticator, queries: StatementLog
) -> None:
    raw, _ = await _key(accounts)
    queries.clear()
    await auth.authenticate(f"Bearer {raw}")
    assert len(queries.statements) == 1  # the miss
    queries.clear()
    for _ in range(50):
        await auth.authenticate(f"Bearer {raw}")
    assert queries.statements == []


async def test_concurrent_misses_share_one_database_read(
    accounts: Accounts, auth: KeyAuthenticator, queries: StatementLog
) -> None:
    raw, _ = await _key(accounts)
    queries.clear()
    principals = await asyncio.gather(*[auth.authenticate(f"Bearer {raw}") for _ in range(20)])
    assert len({p.key_id for p in principals}) == 1
    assert len(queries.statements) == 1


async def test_unknown_keys_are_cached_briefly_too(auth: KeyAuthenticator, queries: StatementLog) -> None:
    for _ in range(20):
        with pytest.raises(AuthError):
            await auth.authenticate("Bearer ic_nobody")
    assert len(queries.statements) == 1


async def test_revoked_key_fails_within_the_ttl(accounts: Accounts, auth: KeyAuthenticator) -> None:
    raw, key_id = await _key(accounts)
    await auth.authenticate(f"Bearer {raw}")
    await accounts.revoke_key(key_id)  # as the CLI would, behind the cache's back
    revoked_at = time.monotonic()
    while True:
        try:
            await auth.authenticate(f"Bearer {raw}")
        except AuthError:
            break
        assert time.monotonic() - revoked_at < TTL_S + 0.5, "revoked key still accepted after the ttl"
        await asyncio.sleep(0.02)
    # And it stays refused.
    with pytest.raises(AuthError):
        await auth.authenticate(f"Bearer {raw}")


async def test_other_keys_of_the_user_survive_a_revocation(
    accounts: Accounts, auth: KeyAuthenticator
) -> None:
    raw, key_id = await _key(accounts)
    other = (await accounts.create_key("alice", name="other")).raw
    await accounts.revoke_key(key_id)
    auth.invalidate()
    with pytest.raises(AuthError):
        await auth.authenticate(f"Bearer {raw}")
    assert (await auth.authenticate(f"Bearer {other}")).username == "alice"


async def test_last_used_at_is_written_by_the_recorder_flush_not_per_request(
    accounts: Accounts, auth: KeyAuthenticator, database: Database, queries: StatementLog
) -> None:
    raw, key_id = await _key(accounts)
    recorder = UsageRecorder(database, auth, interval_s=60)
    queries.clear()
    for _ in range(10):
        await auth.authenticate(f"Bearer {raw}")
    assert queries.writes == []
    [(key, _)] = await accounts.list_keys("alice")
    assert key.last_used_at is None

    queries.clear()
    await recorder.flush()
    assert len([s for s in queries.writes if "api_keys" in s]) == 1  # one write for ten requests
    [(key, _)] = await accounts.list_keys("alice")
    assert key.id == key_id and key.last_used_at is not None

    queries.clear()
    await recorder.flush()  # nothing new: nothing written
    assert queries.writes == []
