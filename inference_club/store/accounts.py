"""Queries on users and API keys. Keyword-only; they never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.store.tables import ApiKey, Meta, User


async def get_user_by_name(session: AsyncSession, *, username: str) -> User | None:
    return (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()


async def get_user(session: AsyncSession, *, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> Sequence[User]:
    return (await session.execute(select(User).order_by(User.created_at))).scalars().all()


async def has_users(session: AsyncSession) -> bool:
    """Whether any user exists (one row is read, however many there are)."""
    return (await session.execute(select(User.id).limit(1))).first() is not None


async def add_user(session: AsyncSession, *, user: User) -> User:
    session.add(user)
    await session.flush()
    return user


async def add_key(session: AsyncSession, *, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


async def find_key_by_hash(session: AsyncSession, *, key_hash: str) -> tuple[ApiKey, User] | None:
    row = (
        await session.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == key_hash)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def find_keys_by_id(session: AsyncSession, *, key_ids: set[str]) -> list[tuple[ApiKey, User]]:
    if not key_ids:
        return []
    query = select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.id.in_(sorted(key_ids)))
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def list_keys(session: AsyncSession, *, user_id: str | None = None) -> Sequence[tuple[ApiKey, User]]:
    query = select(ApiKey, User).join(User, User.id == ApiKey.user_id).order_by(ApiKey.created_at)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


async def get_key(session: AsyncSession, *, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def revoke_key(session: AsyncSession, *, key_id: str, at: datetime) -> bool:
    result = await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=at)
    )
    return bool(getattr(result, "rowcount", 0))


async def touch_keys(session: AsyncSession, *, last_used: dict[str, datetime]) -> None:
    for key_id, at in last_used.items():
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))


async def get_meta(session: AsyncSession, *, key: str) -> str | None:
    row = await session.get(Meta, key)
    return row.value if row else None


async def set_meta(session: AsyncSession, *, key: str, value: str) -> None:
    row = await session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value))
    else:
        row.value = value
    await session.flush()


async def set_user_fields(session: AsyncSession, *, user_id: str, **values: object) -> bool:
    result = await session.execute(update(User).where(User.id == user_id).values(**values))
    return bool(getattr(result, "rowcount", 0))
