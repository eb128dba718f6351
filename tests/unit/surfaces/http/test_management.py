"""Management routes: your keys, providers and usage; the admin API hidden from everyone else."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

_usernames = itertools.count(1)


async def test_keys_are_listed_newest_first_without_their_secret(api: InProcessHub) -> None:
    key = await api.new_key()
    created = await api.http.post("/v1/keys", json={"name": "laptop"}, headers=auth(key))
    assert created.status_code == 201
    raw = created.json()["key"]
    assert created.json()["name"] == "laptop" and raw.startswith(created.json()["prefix"])
    listed = (await api.http.get("/v1/keys", headers=auth(key))).json()["data"]
    assert [k["name"] for k in listed] == ["laptop", "default"]
    assert raw not in repr(listed) and key not in repr(listed)
    assert all("key" not in k for k in listed)
    assert (await api.http.get("/v1/keys", headers=auth(raw))).status_code == 200


async def test_a_key_without_a_body_is_named_default(api: InProcessHub) -> None:
    key = await api.new_key()
    created = await api.http.post("/v1/keys", headers=auth(key))
    assert created.status_code == 201 and created.json()["name"] == "default"


@pytest.mark.parametrize("name", ["", "   ", "bad\nname", "tab\there", "x" * 151])
async def test_a_key_name_that_is_blank_long_or_has_control_characters_is_400(
    api: InProcessHub, name: str
) -> None:
    key = await api.new_key()
    answer = await api.http.post("/v1/keys", json={"name": name}, headers=auth(key))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "name"


async def test_revoking_someone_elses_key_is_404_and_leaves_it_working(api: InProcessHub) -> None:
    mine, theirs = await api.new_key(), await api.new_key()
    [their_key] = (await api.http.get("/v1/keys", headers=auth(theirs))).json()["data"]
    answer = await api.http.delete(f"/v1/keys/{their_key['id']}", headers=auth(mine))
    assert answer.status_code == 404
    assert (await api.http.get("/v1/keys", headers=auth(theirs))).status_code == 200


async def test_revoking_your_key_answers_it_revoked(api: InProcessHub) -> None:
    key = await api.new_key()
    spare = (await api.http.post("/v1/keys", json={"name": "spare"}, headers=auth(key))).json()
    answer = await api.http.delete(f"/v1/keys/{spare['id']}", headers=auth(key))
    assert answer.status_code == 200
    assert answer.json()["id"] == spare["id"] and answer.json()["revoked_at"] is not None
    assert (await api.http.get("/v1/keys", headers=auth(spare["key"]))).status_code == 401


async def test_providers_are_only_your_own(api: InProcessHub) -> None:
    mine, theirs = await api.new_key(), await api.new_key()
    await api.heartbeat(mine, "my-rig", {"llm": ["m1"]})
    await api.heartbeat(theirs, "their-rig", {"llm": ["m2"]}, visibility="shared")
    answer = await api.http.get("/v1/providers", headers=auth(mine))
    assert [p["name"] for p in answer.json()["data"]] == ["my-rig"]
    assert answer.json()["data"][0]["services"][0]["models"] == ["m1"]


@pytest.mark.parametrize(("days", "status"), [(0, 400), (1, 200), (30, 200), ("many", 400), (100000, 400)])
async def test_usage_days_are_bounded(api: InProcessHub, days: object, status: int) -> None:
    key = await api.new_key()
    answer = await api.http.get("/v1/usage", params={"days": str(days)}, headers=auth(key))
    assert answer.status_code == status
    if status == 400:
        assert answer.json()["error"]["param"] == "days"


ADMIN_ROUTES: list[tuple[str, str]] = [
    ("GET", "/v1/admin/users"),
    ("POST", "/v1/admin/users"),
    ("POST", "/v1/admin/users/usr_x/invite"),
    ("POST", "/v1/admin/users/usr_x/disable"),
    ("POST", "/v1/admin/users/usr_x/enable"),
    ("GET", "/v1/admin/providers"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_the_admin_api_does_not_exist_for_a_user(api: InProcessHub, method: str, path: str) -> None:
    key = await api.new_key()
    answer = await api.http.request(method, path, json={"username": "x"}, headers=auth(key))
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"


async def admin_create(api: InProcessHub, admin: str, **body: Any) -> Any:
    return await api.http.post("/v1/admin/users", json=body, headers=auth(admin))


async def test_an_admin_creates_users_and_duplicates_or_bad_preferences_are_refused(
    api: InProcessHub,
) -> None:
    admin = await api.new_key("admin", admin=True)
    name = f"created{next(_usernames)}"
    created = await admin_create(api, admin, username=name, routing_preference="any")
    assert created.status_code == 201
    assert created.json()["username"] == name and created.json()["has_password"] is False
    assert (await admin_create(api, admin, username=name)).status_code == 409
    bad = await admin_create(api, admin, username=f"other{next(_usernames)}", routing_preference="everyone")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "routing_preference"
    listed = (await api.http.get("/v1/admin/users", headers=auth(admin))).json()["data"]
    assert name in [u["username"] for u in listed]


async def test_disabling_stops_the_users_keys_at_once_and_enabling_restores_them(api: InProcessHub) -> None:
    admin = await api.new_key("admin", admin=True)
    user = await api.new_key()
    user_id = await api.user_id(user)
    disabled = await api.http.post(f"/v1/admin/users/{user_id}/disable", headers=auth(admin))
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert (await api.http.get("/v1/keys", headers=auth(user))).status_code == 401
    enabled = await api.http.post(f"/v1/admin/users/{user_id}/enable", headers=auth(admin))
    assert enabled.status_code == 200 and enabled.json()["disabled"] is False
    assert (await api.http.get("/v1/keys", headers=auth(user))).status_code == 200


async def test_an_admin_cannot_disable_themselves(api: InProcessHub) -> None:
    admin = await api.new_key("admin", admin=True)
    answer = await api.http.post(f"/v1/admin/users/{await api.user_id(admin)}/disable", headers=auth(admin))
    assert answer.status_code == 409 and answer.json()["error"]["param"] == "user_id"
    assert (await api.http.get("/v1/keys", headers=auth(admin))).status_code == 200


async def test_an_admin_sees_every_users_providers(api: InProcessHub) -> None:
    admin = await api.new_key("admin", admin=True)
    user = await api.new_key()
    await api.heartbeat(user, "users-rig", {"llm": ["m"]})
    answer = await api.http.get("/v1/admin/providers", headers=auth(admin))
    assert "users-rig" in [p["name"] for p in answer.json()["data"]]


async def test_an_invite_for_an_unknown_user_is_404(api: InProcessHub) -> None:
    admin = await api.new_key("admin", admin=True)
    answer = await api.http.post("/v1/admin/users/usr_missing/invite", headers=auth(admin))
    assert answer.status_code == 404
