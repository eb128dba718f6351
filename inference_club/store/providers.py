"""Queries on providers. Keyword-only; they never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.store.tables import Provider


async def get_provider(session: AsyncSession, *, user_id: str, name: str) -> Provider | None:
    return (
        await session.execute(select(Provider).where(Provider.user_id == user_id, Provider.name == name))
    ).scalar_one_or_none()


async def get_provider_by_id(session: AsyncSession, *, provider_id: str) -> Provider | None:
    return await session.get(Provider, provider_id)


async def list_providers(session: AsyncSession, *, user_id: str | None = None) -> Sequence[Provider]:
    query = select(Provider).order_by(Provider.created_at)
    if user_id is not None:
        query = query.where(Provider.user_id == user_id)
    return (await session.execute(query)).scalars().all()


async def add_provider(session: AsyncSession, *, provider: Provider) -> Provider:
    session.add(provider)
    await session.flush()
    return provider
