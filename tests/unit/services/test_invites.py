"""Invite links on a real database: one use each, until they expire, stored only hashed; the
password they set is checked first and then works for signing in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from inference_club.domain.clock import utcnow
from inference_club.errors import InvalidRequest, NotFound
from inference_club.services.invites import INVITE_PATH, Invites, invite_url
from inference_club.store.tables import Invite
from tests.unit.services.built_hub import Built, built_hub

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path, invite_ttl_s=3600.0) as built:
        yield built


def test_the_link_is_the_dashboard_path_and_the_token() -> None:
    assert invite_url("https://hub.example/", "tok") == f"https://hub.example{INVITE_PATH}tok"


async def test_an_invite_is_for_an_existing_user_and_stored_hashed(built: Built) -> None:
    invites = built.hub.invites
    created = await invites.create(built.principal.user_id)
    assert created.user.username == "alice" and len(created.token) >= 40
    assert timedelta(minutes=59) < created.expires_at - utcnow() <= timedelta(hours=1)
    async with built.hub.database.read() as session:
        [row] = (await session.execute(select(Invite))).scalars().all()
    assert row.token_hash != created.token and created.token not in row.token_hash
    assert (await invites.peek(created.token)).id == built.principal.user_id
    with pytest.raises(NotFound):
        await invites.create("usr_nobody")


async def test_an_invite_sets_the_password_once(built: Built) -> None:
    invites, accounts = built.hub.invites, built.hub.accounts
    created = await invites.create(built.principal.user_id)
    user = await invites.accept(created.token, PASSWORD)
    assert user.password_hash is not None
    assert await accounts.verify_password("alice", PASSWORD) is not None
    with pytest.raises(NotFound):
        await invites.accept(created.token, "another long password")
    with pytest.raises(NotFound):
        await invites.peek(created.token)
    assert (await accounts.get_user(user.id)).password_hash == user.password_hash  # unchanged


async def test_a_password_too_short_leaves_the_invite_open(built: Built) -> None:
    invites = built.hub.invites
    created = await invites.create(built.principal.user_id)
    with pytest.raises(InvalidRequest) as caught:
        await invites.accept(created.token, "short")
    assert caught.value.param == "password"
    assert (await invites.peek(created.token)).username == "alice"


async def test_an_expired_or_unknown_invite_is_not_found(built: Built) -> None:
    created = await built.hub.invites.create(built.principal.user_id)
    async with built.hub.database.transaction() as session:
        await session.execute(update(Invite).values(expires_at=utcnow() - timedelta(seconds=1)))
    for call in (built.hub.invites.peek(created.token), built.hub.invites.accept(created.token, PASSWORD)):
        with pytest.raises(NotFound) as caught:
            await call
        assert caught.value.param == "token"
    with pytest.raises(NotFound):
        await built.hub.invites.peek("not-a-token")
    assert (await built.hub.accounts.get_user(built.principal.user_id)).password_hash is None


async def test_the_lifetime_comes_from_the_service(built: Built) -> None:
    short = Invites(built.hub.database, built.hub.accounts, ttl_s=-1)
    created = await short.create(built.principal.user_id)
    with pytest.raises(NotFound):
        await short.peek(created.token)
