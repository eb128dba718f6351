"""Management API: the caller's keys, providers and usage; admin user management.

The operations are plain functions over the hub and a principal, shared by these
``/v1`` routes (API keys) and the dashboard's session routes, so both do the same thing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from inference_club.errors import Conflict, NotFound
from inference_club.services.account_views import created_key_public, key_public, user_public
from inference_club.services.auth import Principal
from inference_club.services.catalog import providers_public
from inference_club.services.container import Hub
from inference_club.services.invites import invite_url
from inference_club.services.usage_report import MAX_DAYS
from inference_club.surfaces.http.deps import HubDep, PrincipalDep, base_url

router = APIRouter(tags=["management"])


class KeyCreate(BaseModel):
    name: str = Field(
        "default",
        min_length=1,
        max_length=150,
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*\S[^\x00-\x1f\x7f-\x9f]*$",
        description="A label for the key (no control characters).",
    )


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    is_admin: bool = False
    routing_preference: str = Field("own-first", pattern="^(own|own-first|any)$")
    password: str | None = Field(None, description="Optional; otherwise send the user an invite link.")


# --------------------------------------------------------------------------- operations


async def list_keys_of(hub: Hub, principal: Principal) -> dict[str, Any]:
    keys = await hub.accounts.keys_of(principal.user_id)
    return {"object": "list", "data": [key_public(k) for k in reversed(keys)]}


async def create_key_for(hub: Hub, principal: Principal, name: str) -> dict[str, Any]:
    return created_key_public(await hub.accounts.create_key_for(principal.user_id, name=name))


async def revoke_key_of(hub: Hub, principal: Principal, key_id: str) -> dict[str, Any]:
    revoked = await hub.accounts.revoke_key_of(principal.user_id, key_id)
    # This process stops accepting it and closes its tunnels at once; other replicas are told.
    hub.key_watch.key_revoked(revoked.id)
    return key_public(revoked)


def list_providers_of(hub: Hub, principal: Principal, *, everyone: bool = False) -> dict[str, Any]:
    data = providers_public(
        hub.registry,
        hub.capacity,
        window_s=hub.settings.online_window_s,
        user_id=None if everyone else principal.user_id,
    )
    return {"object": "list", "data": data}


async def usage_of(hub: Hub, principal: Principal, days: int) -> dict[str, Any]:
    return await hub.usage_reports.by_day(principal.user_id, days=days)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise NotFound("Not found.")  # the admin API does not reveal itself to others


async def admin_list_users(hub: Hub, principal: Principal) -> dict[str, Any]:
    require_admin(principal)
    return {"object": "list", "data": [user_public(u) for u in await hub.accounts.list_users()]}


async def admin_create_user(hub: Hub, principal: Principal, body: UserCreate) -> dict[str, Any]:
    require_admin(principal)
    user = await hub.accounts.create_user(
        body.username,
        password=body.password,
        is_admin=body.is_admin,
        routing_preference=body.routing_preference,
    )
    return user_public(user)


async def admin_invite(hub: Hub, principal: Principal, user_id: str, base: str) -> dict[str, Any]:
    require_admin(principal)
    created = await hub.invites.create(user_id)
    return {
        "object": "invite",
        "user": user_public(created.user),
        "url": invite_url(base, created.token),
        "expires_at": int(created.expires_at.timestamp()),
    }


async def admin_set_disabled(hub: Hub, principal: Principal, user_id: str, disabled: bool) -> dict[str, Any]:
    require_admin(principal)
    if disabled and user_id == principal.user_id:
        raise Conflict("You cannot disable yourself.", param="user_id")
    user = await hub.accounts.set_disabled(user_id, disabled)
    hub.key_watch.user_changed(user_id)
    return user_public(user)


# --------------------------------------------------------------------------- /v1 routes


@router.get("/v1/keys", summary="Your API keys (never the secret), newest first.")
async def list_keys(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await list_keys_of(hub, principal)


@router.post(
    "/v1/keys", summary="Create an API key; the answer's `key` is shown only this once.", status_code=201
)
async def create_key(hub: HubDep, principal: PrincipalDep, body: KeyCreate | None = None) -> JSONResponse:
    return JSONResponse(await create_key_for(hub, principal, (body or KeyCreate()).name), status_code=201)


@router.delete("/v1/keys/{key_id}", summary="Revoke one of your keys (it stops working within seconds).")
async def revoke_key(key_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await revoke_key_of(hub, principal, key_id)


@router.get("/v1/providers", summary="Your providers (machines) with live state.")
async def list_providers(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return list_providers_of(hub, principal)


@router.get("/v1/usage", summary="Your requests aggregated by UTC day and model.")
async def get_usage(
    hub: HubDep,
    principal: PrincipalDep,
    days: int = Query(30, ge=1, le=MAX_DAYS, description="How many days, today included."),
) -> dict[str, Any]:
    return await usage_of(hub, principal, days)


@router.get("/v1/admin/users", summary="Every user (administrators only).")
async def list_users(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await admin_list_users(hub, principal)


@router.post("/v1/admin/users", summary="Create a user (administrators only).", status_code=201)
async def create_user(hub: HubDep, principal: PrincipalDep, body: UserCreate) -> JSONResponse:
    return JSONResponse(await admin_create_user(hub, principal, body), status_code=201)


@router.post(
    "/v1/admin/users/{user_id}/invite",
    summary="A one-time, expiring link that lets the user set a password (administrators only).",
)
async def invite_user(user_id: str, request: Request, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await admin_invite(hub, principal, user_id, base_url(request))


@router.post(
    "/v1/admin/users/{user_id}/disable",
    summary="Disable a user: no sign-in, no API key works (administrators only).",
)
async def disable_user(user_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await admin_set_disabled(hub, principal, user_id, True)


@router.post(
    "/v1/admin/users/{user_id}/enable", summary="Enable a disabled user again (administrators only)."
)
async def enable_user(user_id: str, hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    return await admin_set_disabled(hub, principal, user_id, False)


@router.get("/v1/admin/providers", summary="Every user's providers with live state (administrators only).")
async def list_all_providers(hub: HubDep, principal: PrincipalDep) -> dict[str, Any]:
    require_admin(principal)
    return list_providers_of(hub, principal, everyone=True)
