"""User, key and meta queries: lookups, ownership of keys, one-time revocation."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from inference_club.domain.clock import as_utc, utcnow
from inference_club.domain.ids import new_id
from inference_club.store import accounts as q
from inference_club.store.tables import ApiKey
from tests.unit.store.conftest import Store, add_user


def make_key(user_id: str, raw: str) -> ApiKey:
    return ApiKey(
        id=new_id("key"),
        user_id=user_id,
        name=raw,
        key_hash=hashlib.sha256(raw.encode()).hexdigest(),
        prefix=raw[:8],
        created_at=utcnow(),
    )


async def test_users_by_name_id_and_in_creation_order(store: Store) -> None:
    async with store.db.read() as session:
        alice = await q.get_user_by_name(session, username="alice")
        assert alice is not None and alice.id == store.alice
        assert await q.get_user_by_name(session, username="carol") is None
        by_id = await q.get_user(session, user_id=store.bob)
        assert by_id is not None and by_id.username == "bob"
        assert await q.get_user(session, user_id="usr_missing") is None
        assert [u.username for u in await q.list_users(session)] == ["alice", "bob"]
        assert await q.has_users(session)


async def test_has_users_is_false_on_an_empty_table_and_names_are_unique(store: Store) -> None:
    async with store.db.transaction() as session:
        assert await q.set_user_fields(session, user_id=store.alice, is_admin=True)
        assert not await q.set_user_fields(session, user_id="usr_missing", is_admin=True)
    async with store.db.read() as session:
        alice = await q.get_user(session, user_id=store.alice)
        assert alice is not None and alice.is_admin
    with pytest.raises(IntegrityError):
        await add_user(store.db, "alice")
    async with store.db.transaction() as session:
        for user in await q.list_users(session):
            await session.delete(user)
        await session.flush()
        assert not await q.has_users(session)


async def test_keys_are_found_by_hash_and_listed_per_owner(store: Store) -> None:
    mine, theirs = make_key(store.alice, "ic_alice_secret"), make_key(store.bob, "ic_bob_secret")
    async with store.db.transaction() as session:
        await q.add_key(session, key=mine)
        await q.add_key(session, key=theirs)
    async with store.db.read() as session:
        found = await q.find_key_by_hash(session, key_hash=mine.key_hash)
        assert found is not None and found[0].id == mine.id and found[1].username == "alice"
        assert await q.find_key_by_hash(session, key_hash="0" * 64) is None
        assert await q.find_keys_by_id(session, key_ids=set()) == []
        pairs = await q.find_keys_by_id(session, key_ids={theirs.id, "key_missing"})
        assert [(k.id, u.username) for k, u in pairs] == [(theirs.id, "bob")]
        assert [k.id for k, _ in await q.list_keys(session, user_id=store.alice)] == [mine.id]
        assert {k.id for k, _ in await q.list_keys(session)} == {mine.id, theirs.id}
        got = await q.get_key(session, key_id=theirs.id)
        assert got is not None and got.user_id == store.bob


async def test_a_key_hash_is_unique(store: Store) -> None:
    async with store.db.transaction() as session:
        await q.add_key(session, key=make_key(store.alice, "same"))
    with pytest.raises(IntegrityError):
        async with store.db.transaction() as session:
            await q.add_key(session, key=make_key(store.bob, "same"))


async def test_revoke_once_and_touch_last_used(store: Store) -> None:
    key = make_key(store.alice, "ic_revoke_me")
    async with store.db.transaction() as session:
        await q.add_key(session, key=key)
    at = utcnow() - timedelta(minutes=1)
    async with store.db.transaction() as session:
        assert await q.revoke_key(session, key_id=key.id, at=at)
        assert not await q.revoke_key(session, key_id=key.id, at=utcnow())  # already revoked
        assert not await q.revoke_key(session, key_id="key_missing", at=utcnow())
        await q.touch_keys(session, last_used={key.id: at})
    async with store.db.read() as session:
        row = await q.get_key(session, key_id=key.id)
    assert row is not None and row.revoked_at is not None and row.last_used_at is not None
    assert abs((as_utc(row.revoked_at) - at).total_seconds()) < 1  # the first revocation stands
    assert abs((as_utc(row.last_used_at) - at).total_seconds()) < 1


async def test_meta_is_an_upsert(store: Store) -> None:
    async with store.db.transaction() as session:
        assert await q.get_meta(session, key="bootstrapped") is None
        await q.set_meta(session, key="bootstrapped", value="1")
        await q.set_meta(session, key="bootstrapped", value="2")
    async with store.db.read() as session:
        assert await q.get_meta(session, key="bootstrapped") == "2"
