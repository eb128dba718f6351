"""Providers: a name is per user, lookups never cross users."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.store import providers as q
from inference_club.store.tables import Provider
from tests.unit.store.conftest import Store


def provider(user_id: str, name: str) -> Provider:
    return Provider(id=new_id("prov"), user_id=user_id, name=name, agent_secret="s", created_at=utcnow())


async def test_one_name_per_user_and_lookups_by_owner(store: Store) -> None:
    alices, bobs = provider(store.alice, "rig"), provider(store.bob, "rig")  # same name, two owners
    async with store.db.transaction() as session:
        await q.add_provider(session, provider=alices)
        await q.add_provider(session, provider=bobs)
    async with store.db.read() as session:
        found = await q.get_provider(session, user_id=store.bob, name="rig")
        assert found is not None and found.id == bobs.id
        assert found.transport == "direct" and found.visibility == "private" and found.services == []
        assert await q.get_provider(session, user_id=store.alice, name="other") is None
        by_id = await q.get_provider_by_id(session, provider_id=alices.id)
        assert by_id is not None and by_id.user_id == store.alice
        assert await q.get_provider_by_id(session, provider_id="prov_missing") is None
        assert [p.id for p in await q.list_providers(session, user_id=store.alice)] == [alices.id]
        assert [p.id for p in await q.list_providers(session)] == [alices.id, bobs.id]
    with pytest.raises(IntegrityError):
        async with store.db.transaction() as session:
            await q.add_provider(session, provider=provider(store.alice, "rig"))
