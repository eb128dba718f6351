"""Authentication of every route (missing, unknown, revoked, disabled keys) and the request helpers."""

from __future__ import annotations

import logging

import pytest

from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

PUBLIC_URL = "https://club.example/"


@pytest.fixture(scope="module")
def hub_overrides() -> dict[str, object]:
    return {"public_url": PUBLIC_URL}


def assert_refused(status: int, body: dict[str, object], headers: dict[str, str]) -> None:
    assert status == 401
    assert set(body) == {"detail", "error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert error["type"] == "invalid_api_key" and error["message"] == body["detail"]
    assert headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer ic_unknown"},
        {"Authorization": "Token abc"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "unknown", "other-scheme", "empty-token"],
)
async def test_a_request_without_a_valid_key_is_401_in_both_shapes(
    api: InProcessHub, headers: dict[str, str]
) -> None:
    answer = await api.http.get("/v1/keys", headers=headers)
    assert_refused(answer.status_code, answer.json(), dict(answer.headers))


async def test_a_revoked_key_stops_working_while_the_users_other_key_still_works(api: InProcessHub) -> None:
    key = await api.new_key()
    listed = await api.http.get("/v1/keys", headers=auth(key))
    assert listed.status_code == 200
    [first] = listed.json()["data"]
    second = (await api.http.post("/v1/keys", json={"name": "spare"}, headers=auth(key))).json()["key"]

    assert (await api.http.delete(f"/v1/keys/{first['id']}", headers=auth(second))).status_code == 200

    refused = await api.http.get("/v1/keys", headers=auth(key))
    assert_refused(refused.status_code, refused.json(), dict(refused.headers))
    assert (await api.http.get("/v1/keys", headers=auth(second))).status_code == 200


async def test_a_disabled_users_key_is_refused(api: InProcessHub) -> None:
    key = await api.new_key()
    user_id = await api.user_id(key)
    await api.hub.accounts.set_disabled(user_id, True)
    api.hub.key_watch.user_changed(user_id)  # what the admin route does after disabling
    answer = await api.http.get("/v1/keys", headers=auth(key))
    assert_refused(answer.status_code, answer.json(), dict(answer.headers))


async def test_the_callers_user_id_reaches_the_requests_log_line(
    api: InProcessHub, caplog: pytest.LogCaptureFixture
) -> None:
    key = await api.new_key()
    caplog.set_level(logging.INFO, logger="inference_club.access")
    answer = await api.http.get("/v1/keys", headers={**auth(key), "x-request-id": "deps-user-line"})
    assert answer.status_code == 200
    [line] = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "inference_club.access" and r.fields["request_id"] == "deps-user-line"  # type: ignore[attr-defined]
    ]
    assert line["user"] == await api.user_id(key)


async def test_links_are_built_on_the_configured_public_url_without_its_trailing_slash(
    api: InProcessHub,
) -> None:
    admin = await api.new_key("admin", admin=True)
    invited = await api.new_key()
    user_id = await api.user_id(invited)
    answer = await api.http.post(f"/v1/admin/users/{user_id}/invite", headers=auth(admin))
    assert answer.status_code == 200
    url: str = answer.json()["url"]
    assert url.startswith("https://club.example/") and not url.startswith("https://club.example//")
    assert "hub.test" not in url


@pytest.mark.parametrize(
    ("scheme", "host", "server", "root_path"),
    [
        ("http", b"hub.example:8080", ("10.0.0.1", 8080), ""),
        ("https", b"hub.example", ("10.0.0.1", 443), "/club"),
        ("http", None, ("10.0.0.1", 80), ""),
        ("http", None, ("10.0.0.1", 8000), "/a/b/"),
        ("https", None, ("::1", 8443), ""),
        ("http", None, None, ""),
        ("http", b"[::1]:9000", ("::1", 9000), ""),
        ("http", b"evil.example:notaport", ("10.0.0.1", 8080), ""),
        ("http", b"bad host\x7f", ("10.0.0.1", 8080), ""),
        ("http", "h\u00fcb.example".encode("latin-1"), ("10.0.0.1", 8080), ""),
        ("http", b"h" * 5000 + b".example", ("10.0.0.1", 8080), ""),  # too long to keep
    ],
)
async def test_base_url_is_what_starlette_gives(
    scheme: str, host: bytes | None, server: tuple[str, int] | None, root_path: str
) -> None:
    from types import SimpleNamespace

    from starlette.requests import Request

    from inference_club.surfaces.http.deps import base_url

    headers = [(b"accept", b"*/*")] + ([] if host is None else [(b"host", host)])
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": scheme,
        "server": None if server is None else list(server),  # servers may hand a list
        "root_path": root_path,
        "path": f"{root_path.rstrip('/')}/v1/images/generations",
        "query_string": b"x=1",
        "headers": headers,
        "app": SimpleNamespace(
            state=SimpleNamespace(hub=SimpleNamespace(settings=SimpleNamespace(public_url="")))
        ),
    }
    expected = str(Request(dict(scope)).base_url).rstrip("/")
    assert base_url(Request(scope)) == expected
    assert base_url(Request(scope)) == expected  # and again, from the memo
