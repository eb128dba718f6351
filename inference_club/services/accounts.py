"""Users and API keys: creation, listing, revocation, the first admin."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.errors import Conflict, InvalidRequest, NotFound
from inference_club.store import accounts as q
from inference_club.store.db import Database
from inference_club.store.tables import ApiKey, User

KEY_PREFIX = "ic_"
ROUTING_PREFERENCES = ("own", "own-first", "any")
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,150}$")
_BOOTSTRAPPED = "bootstrap_admin_created"


def hash_key(raw_key: str) -> str:
    """Keys carry 256 bits of entropy, so a plain sha256 is the right (fast) hash."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    raw: str  # shown once, never stored


class Accounts:
    def __init__(self, database: Database) -> None:
        self._db = database
        self._hasher = PasswordHasher()

    async def create_user(
        self,
        username: str,
        *,
        password: str | None = None,
        is_admin: bool = False,
        routing_preference: str = "own-first",
    ) -> User:
        if not _USERNAME.match(username):
            raise InvalidRequest(
                "username must be 1-150 letters, digits or . _ @ -", param="username"
            )
        if routing_preference not in ROUTING_PREFERENCES:
            raise InvalidRequest(
                f"routing_preference must be one of {', '.join(ROUTING_PREFERENCES)}",
                param="routing_preference",
            )
        async with self._db.transaction() as session:
            if await q.get_user_by_name(session, username=username):
                raise Conflict(f"user {username!r} already exists", param="username")
            user = User(
                id=new_id("usr"),
                username=username,
                password_hash=self._hasher.hash(password) if password else None,
                is_admin=is_admin,
                routing_preference=routing_preference,
                created_at=utcnow(),
            )
            return await q.add_user(session, user=user)

    async def verify_password(self, username: str, password: str) -> User | None:
        async with self._db.read() as session:
            user = await q.get_user_by_name(session, username=username)
        if user is None or not user.password_hash:
            return None
        try:
            self._hasher.verify(user.password_hash, password)
        except VerificationError:
            return None
        return user

    async def list_users(self) -> list[User]:
        async with self._db.read() as session:
            return list(await q.list_users(session))

    async def create_key(self, username: str, *, name: str = "default") -> CreatedKey:
        raw = generate_key()
        async with self._db.transaction() as session:
            user = await q.get_user_by_name(session, username=username)
            if user is None:
                raise NotFound(f"no user named {username!r}", param="user")
            key = ApiKey(
                id=new_id("key"),
                user_id=user.id,
                name=name,
                key_hash=hash_key(raw),
                prefix=raw[: len(KEY_PREFIX) + 6],
                created_at=utcnow(),
                last_used_at=None,
                revoked_at=None,
            )
            await q.add_key(session, key=key)
        return CreatedKey(key=key, raw=raw)

    async def list_keys(self, username: str | None = None) -> list[tuple[ApiKey, User]]:
        async with self._db.read() as session:
            user_id = None
            if username is not None:
                user = await q.get_user_by_name(session, username=username)
                if user is None:
                    raise NotFound(f"no user named {username!r}", param="user")
                user_id = user.id
            return list(await q.list_keys(session, user_id=user_id))

    async def revoke_key(self, key_id: str) -> None:
        async with self._db.transaction() as session:
            if await q.get_key(session, key_id=key_id) is None:
                raise NotFound(f"no key with id {key_id!r}", param="key_id")
            await q.revoke_key(session, key_id=key_id, at=utcnow())

    async def bootstrap_admin(self) -> CreatedKey | None:
        """On the first start with an empty database: an admin and one key, printed once."""
        async with self._db.transaction() as session:
            if await q.get_meta(session, key=_BOOTSTRAPPED) or await q.count_users(session):
                return None
            await q.set_meta(session, key=_BOOTSTRAPPED, value=utcnow().isoformat())
        await self.create_user("admin", is_admin=True)
        return await self.create_key("admin", name="bootstrap")
