"""Invites: only an unused, unexpired token is found, and it can be used once."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.store import invites as q
from inference_club.store.tables import Invite
from tests.unit.store.conftest import Store


def invite(user_id: str, token: str, *, expires_in_s: float = 3600) -> Invite:
    now = utcnow()
    return Invite(
        id=new_id("inv"),
        user_id=user_id,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        created_at=now,
        expires_at=now + timedelta(seconds=expires_in_s),
    )


async def test_open_invites_are_found_with_their_user(store: Store) -> None:
    fresh, expired = invite(store.alice, "fresh"), invite(store.bob, "old", expires_in_s=-1)
    async with store.db.transaction() as session:
        await q.add_invite(session, invite=fresh)
        await q.add_invite(session, invite=expired)
    async with store.db.read() as session:
        found = await q.find_open_invite(session, token_hash=fresh.token_hash, now=utcnow())
        assert found is not None and found[0].id == fresh.id and found[1].username == "alice"
        assert await q.find_open_invite(session, token_hash=expired.token_hash, now=utcnow()) is None
        assert await q.find_open_invite(session, token_hash="0" * 64, now=utcnow()) is None
        later = utcnow() + timedelta(hours=2)
        assert await q.find_open_invite(session, token_hash=fresh.token_hash, now=later) is None


async def test_an_invite_is_used_once_even_when_two_requests_race(store: Store) -> None:
    item = invite(store.alice, "once")
    async with store.db.transaction() as session:
        await q.add_invite(session, invite=item)

    async def use() -> bool:
        async with store.db.transaction() as session:
            return await q.use_invite(session, invite_id=item.id, now=utcnow())

    assert sorted(await asyncio.gather(use(), use(), use())) == [False, False, True]
    async with store.db.read() as session:
        assert await q.find_open_invite(session, token_hash=item.token_hash, now=utcnow()) is None
