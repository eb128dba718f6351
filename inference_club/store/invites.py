"""Queries on dashboard invites. Keyword-only; they never commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.store.tables import Invite, User


async def add_invite(session: AsyncSession, *, invite: Invite) -> None:
    session.add(invite)
    await session.flush()


async def find_open_invite(
    session: AsyncSession, *, token_hash: str, now: datetime
) -> tuple[Invite, User] | None:
    """The unused, unexpired invite with this token hash, and its user."""
    row = (
        await session.execute(
            select(Invite, User)
            .join(User, User.id == Invite.user_id)
            .where(Invite.token_hash == token_hash, Invite.used_at.is_(None), Invite.expires_at > now)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def use_invite(session: AsyncSession, *, invite_id: str, now: datetime) -> bool:
    """Mark the invite used; False when another request used it first."""
    result = await session.execute(
        update(Invite).where(Invite.id == invite_id, Invite.used_at.is_(None)).values(used_at=now)
    )
    return bool(getattr(result, "rowcount", 0))
