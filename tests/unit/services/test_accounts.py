"""Users and API keys on SQLite and PostgreSQL: creation, listing, revocation, first admin."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import text

from inference_club.errors import Conflict, InvalidRequest, NotFound
from inference_club.services.accounts import KEY_PREFIX, Accounts, hash_key
from inference_club.store.db import Database


async def test_create_and_list_users(accounts: Accounts) -> None:
    alice = await accounts.create_user("alice")
    bob = await accounts.create_user("bob.b@example", is_admin=True, routing_preference="own")
    assert alice.id.startswith("usr_") and alice.id != bob.id
    assert (alice.is_admin, alice.routing_preference, alice.password_hash) == (False, "own-first", None)
    assert (bob.is_admin, bob.routing_preference) == (True, "own")
    assert [u.username for u in await accounts.list_users()] == ["alice", "bob.b@example"]


async def test_duplicate_user_is_a_409_conflict(accounts: Accounts) -> None:
    await accounts.create_user("alice")
    with pytest.raises(Conflict) as caught:
        await accounts.create_user("alice", is_admin=True)
    assert caught.value.status_code == 409
    assert caught.value.param == "username"
    assert len(await accounts.list_users()) == 1


@pytest.mark.parametrize("name", ["", "has space", "semi;colon", "x" * 151, "new\nline", "ünïcode"])
async def test_bad_username_is_a_400(accounts: Accounts, name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await accounts.create_user(name)
    assert caught.value.status_code == 400
    assert caught.value.param == "username"
    assert await accounts.list_users() == []


async def test_bad_routing_preference_is_a_400(accounts: Accounts) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await accounts.create_user("alice", routing_preference="everyone")
    assert caught.value.param == "routing_preference"


@pytest.mark.parametrize("preference", ["own", "own-first", "any"])
async def test_routing_preferences(accounts: Accounts, preference: str) -> None:
    user = await accounts.create_user("alice", routing_preference=preference)
    assert user.routing_preference == preference


async def test_password_is_stored_with_a_slow_hash(accounts: Accounts) -> None:
    user = await accounts.create_user("alice", password="correct horse battery staple")
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2")
    assert "correct horse" not in user.password_hash
    assert (await accounts.verify_password("alice", "correct horse battery staple")) is not None
    assert await accounts.verify_password("alice", "wrong") is None
    assert await accounts.verify_password("nobody", "x") is None
    await accounts.create_user("nopass")
    assert await accounts.verify_password("nopass", "") is None


async def test_keys_are_high_entropy_named_and_stored_only_as_hash(
    accounts: Accounts, database: Database
) -> None:
    await accounts.create_user("alice")
    first = await accounts.create_key("alice", name="laptop")
    second = await accounts.create_key("alice", name="agent")
    assert first.raw != second.raw
    for created in (first, second):
        assert created.raw.startswith(KEY_PREFIX)
        assert len(created.raw) >= len(KEY_PREFIX) + 43  # 32 random bytes, url-safe base64
        assert created.key.id.startswith("key_")
        assert (
            created.key.key_hash == hashlib.sha256(created.raw.encode()).hexdigest() == hash_key(created.raw)
        )
        assert created.raw.startswith(created.key.prefix) and len(created.key.prefix) < 12
    assert (first.key.name, second.key.name) == ("laptop", "agent")
    # No column of the table holds the key itself.
    async with database.read() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).all()
    assert len(rows) == 2
    dumped = repr(rows)
    assert first.raw not in dumped and second.raw not in dumped


async def test_key_for_unknown_user_is_not_found(accounts: Accounts) -> None:
    with pytest.raises(NotFound) as caught:
        await accounts.create_key("ghost")
    assert caught.value.param == "user"


async def test_list_keys_all_and_per_user(accounts: Accounts) -> None:
    await accounts.create_user("alice")
    await accounts.create_user("bob")
    a1 = await accounts.create_key("alice", name="one")
    a2 = await accounts.create_key("alice", name="two")
    b1 = await accounts.create_key("bob")
    assert [k.id for k, _ in await accounts.list_keys()] == [a1.key.id, a2.key.id, b1.key.id]
    listed = await accounts.list_keys("alice")
    assert [(k.id, u.username) for k, u in listed] == [(a1.key.id, "alice"), (a2.key.id, "alice")]
    assert await accounts.list_keys("bob") and len(await accounts.list_keys("bob")) == 1
    with pytest.raises(NotFound):
        await accounts.list_keys("ghost")


async def test_revoke_key(accounts: Accounts) -> None:
    await accounts.create_user("alice")
    kept = await accounts.create_key("alice", name="kept")
    gone = await accounts.create_key("alice", name="gone")
    await accounts.revoke_key(gone.key.id)
    state = {k.id: k.revoked_at for k, _ in await accounts.list_keys("alice")}
    assert state[kept.key.id] is None
    assert state[gone.key.id] is not None
    await accounts.revoke_key(gone.key.id)  # revoking twice is harmless
    with pytest.raises(NotFound) as caught:
        await accounts.revoke_key("key_unknown")
    assert caught.value.param == "key_id"


async def test_bootstrap_admin_only_once(accounts: Accounts) -> None:
    created = await accounts.bootstrap_admin()
    assert created is not None
    assert created.raw.startswith(KEY_PREFIX)
    [admin] = await accounts.list_users()
    assert admin.username == "admin" and admin.is_admin
    assert await accounts.bootstrap_admin() is None
    assert await accounts.bootstrap_admin() is None
    assert len(await accounts.list_keys()) == 1


async def test_bootstrap_admin_never_after_users_exist(accounts: Accounts) -> None:
    await accounts.create_user("alice")
    assert await accounts.bootstrap_admin() is None
    assert [u.username for u in await accounts.list_users()] == ["alice"]


async def test_bootstrap_admin_not_again_after_admin_removed(accounts: Accounts, database: Database) -> None:
    assert await accounts.bootstrap_admin() is not None
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM api_keys"))
        await session.execute(text("DELETE FROM users"))
    assert await accounts.bootstrap_admin() is None
