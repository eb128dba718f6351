"""The public shapes of users and keys: the secret shown once, never the hashes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.services.account_views import created_key_public, key_public, user_public
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


async def test_a_new_key_shows_its_secret_once_and_a_listed_key_never(built: Built) -> None:
    created = await built.hub.accounts.create_key("alice", name="laptop")
    shown = created_key_public(created)
    assert shown["key"] == created.raw and shown["name"] == "laptop" and shown["object"] == "api_key"
    assert shown["prefix"] == created.key.prefix and created.raw.startswith(shown["prefix"])
    assert isinstance(shown["created_at"], int) and shown["revoked_at"] is None
    listed = key_public(created.key)
    assert "key" not in listed and created.key.key_hash not in listed.values()
    await built.hub.accounts.revoke_key(created.key.id)
    [revoked] = [k for k, _ in await built.hub.accounts.list_keys("alice") if k.id == created.key.id]
    assert isinstance(key_public(revoked)["revoked_at"], int)


async def test_a_user_shows_whether_a_password_is_set_not_the_hash(built: Built) -> None:
    accounts = built.hub.accounts
    plain = user_public(await accounts.get_user(built.principal.user_id))
    assert (plain["username"], plain["has_password"], plain["disabled"], plain["is_admin"]) == (
        "alice",
        False,
        False,
        False,
    )
    admin = await accounts.create_user("root", is_admin=True, password="correct horse battery staple")
    await accounts.set_disabled(admin.id, True)
    shown = user_public(await accounts.get_user(admin.id))
    assert (shown["has_password"], shown["disabled"], shown["is_admin"]) == (True, True, True)
    assert all("argon2" not in str(v) for v in shown.values())
    assert shown["routing_preference"] == "own-first" and shown["object"] == "user"
