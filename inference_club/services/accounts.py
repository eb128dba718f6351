"""Users and API keys: creation, listing, revocation, the first admin."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
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
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_KEY_NAME_LENGTH = 150
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
            raise InvalidRequest("username must be 1-150 letters, digits or . _ @ -", param="username")
        if routing_preference not in ROUTING_PREFERENCES:
            raise InvalidRequest(
                f"routing_preference must be one of {', '.join(ROUTING_PREFERENCES)}",
                param="routing_preference",
            )
        if password is not None:
            check_password(password)
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
        """The user if the password is theirs and they are not disabled."""
        async with self._db.read() as session:
            user = await q.get_user_by_name(session, username=username)
        if user is None or not user.password_hash or user.disabled_at is not None:
            # Same work either way, so timing does not tell which usernames exist.
            self._hasher.hash(password[:MAX_PASSWORD_LENGTH])
            return None
        try:
            self._hasher.verify(user.password_hash, password[:MAX_PASSWORD_LENGTH])
        except VerificationError:
            return None
        return user

    async def get_user(self, user_id: str) -> User:
        async with self._db.read() as session:
            user = await q.get_user(session, user_id=user_id)
        if user is None:
            raise NotFound(f"No user with id {user_id!r}.", param="user_id")
        return user

    async def get_user_by_name(self, username: str) -> User:
        async with self._db.read() as session:
            user = await q.get_user_by_name(session, username=username)
        if user is None:
            raise NotFound(f"no user named {username!r}", param="user")
        return user

    async def set_password(self, user_id: str, password: str) -> None:
        """Set a dashboard password (argon2id); sessions signed before it stop working."""
        check_password(password)
        async with self._db.transaction() as session:
            if not await q.set_user_fields(
                session, user_id=user_id, password_hash=self._hasher.hash(password)
            ):
                raise NotFound(f"No user with id {user_id!r}.", param="user_id")

    async def set_disabled(self, user_id: str, disabled: bool) -> User:
        """Disable (no sign-in, no API key works) or enable a user."""
        async with self._db.transaction() as session:
            if not await q.set_user_fields(
                session, user_id=user_id, disabled_at=utcnow() if disabled else None
            ):
                raise NotFound(f"No user with id {user_id!r}.", param="user_id")
        return await self.get_user(user_id)

    async def keys_of(self, user_id: str) -> list[ApiKey]:
        """The user's keys, revoked ones included, oldest first."""
        async with self._db.read() as session:
            return [key for key, _ in await q.list_keys(session, user_id=user_id)]

    async def create_key_for(self, user_id: str, *, name: str) -> CreatedKey:
        name = name.strip()
        if (
            not name
            or len(name) > MAX_KEY_NAME_LENGTH
            or any(unicodedata.category(c) in ("Cc", "Cs") for c in name)
        ):
            raise InvalidRequest(
                f"name must be 1-{MAX_KEY_NAME_LENGTH} characters without control characters.", param="name"
            )
        user = await self.get_user(user_id)
        return await self.create_key(user.username, name=name)

    async def revoke_key_of(self, user_id: str, key_id: str) -> ApiKey:
        """Revoke one of the user's own keys; another user's key is ``NotFound``."""
        async with self._db.transaction() as session:
            key = await q.get_key(session, key_id=key_id)
            if key is None or key.user_id != user_id:
                raise NotFound(f"No key with id {key_id!r}.", param="key_id")
            await q.revoke_key(session, key_id=key_id, at=utcnow())
        async with self._db.read() as session:
            revoked = await q.get_key(session, key_id=key_id)
        assert revoked is not None
        return revoked

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
            if await q.get_meta(session, key=_BOOTSTRAPPED) or await q.has_users(session):
                return None
            await q.set_meta(session, key=_BOOTSTRAPPED, value=utcnow().isoformat())
        await self.create_user("admin", is_admin=True)
        return await self.create_key("admin", name="bootstrap")


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"password must be {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters.", param="password"
        )
