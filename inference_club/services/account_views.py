"""Public shapes of users and API keys (the API and the dashboard show the same)."""

from __future__ import annotations

from typing import Any

from inference_club.domain.clock import unix
from inference_club.services.accounts import CreatedKey
from inference_club.store.tables import ApiKey, User


def key_public(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "api_key",
        "name": key.name,
        "prefix": key.prefix,
        "created_at": unix(key.created_at),
        "last_used_at": unix(key.last_used_at),
        "revoked_at": unix(key.revoked_at),
    }


def created_key_public(created: CreatedKey) -> dict[str, Any]:
    """The new key with its secret, which is shown this once."""
    return {**key_public(created.key), "key": created.raw}


def user_public(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "object": "user",
        "username": user.username,
        "is_admin": user.is_admin,
        "routing_preference": user.routing_preference,
        "has_password": bool(user.password_hash),
        "disabled": user.disabled_at is not None,
        "created_at": unix(user.created_at),
    }
