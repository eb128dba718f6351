"""One-time, expiring invite links that let a user set their own dashboard password."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.errors import NotFound
from inference_club.services.accounts import Accounts, check_password
from inference_club.store import accounts as users_q
from inference_club.store import invites as q
from inference_club.store.db import Database
from inference_club.store.tables import Invite, User

INVITE_PATH = "/dashboard/invite/"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{INVITE_PATH}{token}"


@dataclass(frozen=True, slots=True)
class CreatedInvite:
    token: str  # shown once, stored only hashed
    user: User
    expires_at: datetime


class Invites:
    def __init__(self, database: Database, accounts: Accounts, *, ttl_s: float) -> None:
        self._db = database
        self._accounts = accounts
        self._ttl = timedelta(seconds=ttl_s)

    def __repr__(self) -> str:
        return f"<Invites ttl={self._ttl}>"

    async def create(self, user_id: str) -> CreatedInvite:
        token = secrets.token_urlsafe(32)
        now = utcnow()
        async with self._db.transaction() as session:
            user = await users_q.get_user(session, user_id=user_id)
            if user is None:
                raise NotFound(f"No user with id {user_id!r}.", param="user_id")
            await q.add_invite(
                session,
                invite=Invite(
                    id=new_id("inv"),
                    user_id=user.id,
                    token_hash=_hash(token),
                    created_at=now,
                    expires_at=now + self._ttl,
                    used_at=None,
                ),
            )
        return CreatedInvite(token=token, user=user, expires_at=now + self._ttl)

    async def peek(self, token: str) -> User:
        """The user an open invite is for; ``NotFound`` when it is unknown, used or expired."""
        async with self._db.read() as session:
            found = await q.find_open_invite(session, token_hash=_hash(token), now=utcnow())
        if found is None:
            raise NotFound("This invite link is unknown, was already used or has expired.", param="token")
        return found[1]

    async def accept(self, token: str, password: str) -> User:
        """Use the invite once: set the user's password. A second use is ``NotFound``."""
        check_password(password)
        now = utcnow()
        async with self._db.transaction() as session:
            found = await q.find_open_invite(session, token_hash=_hash(token), now=now)
            if found is None or not await q.use_invite(session, invite_id=found[0].id, now=now):
                raise NotFound("This invite link is unknown, was already used or has expired.", param="token")
        user = found[1]
        await self._accounts.set_password(user.id, password)
        return await self._accounts.get_user(user.id)
