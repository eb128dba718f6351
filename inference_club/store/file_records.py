"""Queries on stored file records. Keyword-only; they never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.store.tables import StoredFile


async def add_file(session: AsyncSession, *, record: StoredFile) -> StoredFile:
    session.add(record)
    await session.flush()
    return record


async def get_file(session: AsyncSession, *, file_id: str, user_id: str | None) -> StoredFile | None:
    """``user_id=None`` skips the owner check (signed share links)."""
    record = await session.get(StoredFile, file_id)
    if record is None or (user_id is not None and record.user_id != user_id):
        return None
    return record


async def list_files(
    session: AsyncSession,
    *,
    user_id: str,
    limit: int,
    after: str | None = None,
    content_prefix: str | None = None,
) -> Sequence[StoredFile]:
    """``content_prefix`` keeps files whose content type starts with it (``image/``)."""
    query = select(StoredFile).where(StoredFile.user_id == user_id)
    if content_prefix:
        query = query.where(StoredFile.content_type.startswith(content_prefix, autoescape=True))
    if after:
        query = query.where(StoredFile.id < after)
    return (await session.execute(query.order_by(StoredFile.id.desc()).limit(limit))).scalars().all()


async def delete_file(session: AsyncSession, *, file_id: str) -> None:
    await session.execute(delete(StoredFile).where(StoredFile.id == file_id))
