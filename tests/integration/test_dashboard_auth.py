"""Dashboard sign-in and its defences, over a real socket (no browser needed)."""

from __future__ import annotations

import re

import httpx

from inference_club.services.invites import Invites
from tests.conftest import RunningHub

PASSWORD = "correct horse battery"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def _browser(hub: RunningHub, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub.base_url, timeout=30, headers=headers)


async def _form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    match = _TOKEN.search(page.text)
    assert match, page.text
    return match.group(1)


async def _sign_in(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    token = await _form_token(client, "/dashboard/login")
    return await client.post(
        "/dashboard/login",
        data={"username": username, "password": password, "csrf_token": token, "next": "/dashboard/jobs"},
    )


async def test_sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it(hub: RunningHub) -> None:
    await hub.hub.accounts.create_user("alice", password=PASSWORD)
    async with _browser(hub) as client:
        assert (await client.get("/dashboard")).headers["location"] == "/dashboard/login?next=%2Fdashboard"
        signed = await _sign_in(client, "alice")
        assert signed.status_code == 303 and signed.headers["location"] == "/dashboard/jobs"
        cookie = signed.headers["set-cookie"]
        assert "ic_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Max-Age=" in cookie and "Secure" not in cookie
        page = await client.get("/dashboard")
        assert page.status_code == 200 and "alice" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        token = _TOKEN.search(page.text).group(1)  # type: ignore[union-attr]
        out = await client.post("/dashboard/logout", data={"csrf_token": token})
        assert out.status_code == 303
        assert (await client.get("/dashboard")).status_code == 303

    async with _browser(hub, **{"x-forwarded-proto": "https"}) as client:  # as behind a TLS proxy
        form = await client.get("/dashboard/login")
        assert "Secure" in form.headers["set-cookie"]
        token = _TOKEN.search(form.text).group(1)  # type: ignore[union-attr]
        # The client speaks plain HTTP, so it would not send the Secure cookie back by itself.
        signed = await client.post(
            "/dashboard/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token},
            headers={"cookie": f"ic_csrf={form.cookies['ic_csrf']}"},
        )
        assert signed.status_code == 303 and "Secure" in signed.headers["set-cookie"]

    async with _browser(hub) as client:
        assert (await _sign_in(client, "alice", "wrong password")).status_code == 401
        assert (await _sign_in(client, "nobody")).status_code == 401
        assert (await _sign_in(client, "alice")).headers["location"] == "/dashboard/jobs"
        evil = await client.post(
            "/dashboard/login",
            data={
                "username": "alice",
                "password": PASSWORD,
                "next": "//evil.example/",
                "csrf_token": await _form_token(client, "/dashboard/login"),
            },
        )
        assert evil.headers["location"] == "/dashboard"  # never off-site


async def test_state_changing_calls_need_the_csrf_token(hub: RunningHub) -> None:
    await hub.hub.accounts.create_user("alice", password=PASSWORD)
    async with _browser(hub) as client:
        await _sign_in(client, "alice")
        token = _TOKEN.search((await client.get("/dashboard/settings/token")).text).group(1)  # type: ignore[union-attr]
        assert (await client.post("/dashboard/api/keys", json={"name": "x"})).status_code == 403
        assert (
            await client.post("/dashboard/api/keys", json={"name": "x"}, headers={"x-csrf-token": "forged"})
        ).status_code == 403
        assert (
            await client.post(
                "/dashboard/api/keys",
                json={"name": "x"},
                headers={"x-csrf-token": token, "origin": "https://evil.example"},
            )
        ).status_code == 403
        made = await client.post("/dashboard/api/keys", json={"name": "x"}, headers={"x-csrf-token": token})
        assert made.status_code == 201 and made.json()["key"].startswith("ic_")
        refused = await client.post("/dashboard/logout", data={})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert (
            await client.post("/dashboard/login", data={"username": "alice", "password": PASSWORD})
        ).status_code == 403


async def test_sessions_never_authorize_v1_and_keys_never_sign_in(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    await hub.hub.accounts.set_password((await hub.hub.accounts.get_user_by_name("alice")).id, PASSWORD)
    async with _browser(hub) as client:
        await _sign_in(client, "alice")
        assert (await client.get("/dashboard")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401  # the cookie alone
        assert (await client.get("/v1/keys")).status_code == 401
    async with _browser(hub, authorization=f"Bearer {key}") as client:
        assert (await client.get("/v1/models")).status_code == 200
        assert (await client.get("/dashboard")).status_code == 303  # to the sign-in page
        assert (await client.get("/dashboard/api/keys")).status_code == 401
        client.cookies.set("ic_session", key)
        assert (await client.get("/dashboard/settings/token")).status_code == 303


async def test_a_new_password_ends_older_sessions(hub: RunningHub) -> None:
    user = await hub.hub.accounts.create_user("alice", password=PASSWORD)
    async with _browser(hub) as client:
        await _sign_in(client, "alice")
        assert (await client.get("/dashboard")).status_code == 200
        await hub.hub.accounts.set_password(user.id, "another password")
        assert (await client.get("/dashboard")).status_code == 303


async def test_an_invite_link_works_once_and_expires(hub: RunningHub) -> None:
    user = await hub.hub.accounts.create_user("newbie")
    invite = await hub.hub.invites.create(user.id)
    path = f"/dashboard/invite/{invite.token}"
    async with _browser(hub) as client:
        token = await _form_token(client, path)
        differ = await client.post(
            path, data={"password": "abcdefgh1", "confirm": "abcdefgh2", "csrf_token": token}
        )
        assert differ.status_code == 400
        short = await client.post(path, data={"password": "short", "confirm": "short", "csrf_token": token})
        assert short.status_code == 400 and "password must be 8-1024 characters" in short.text
        accepted = await client.post(
            path, data={"password": "abcdefgh1", "confirm": "abcdefgh1", "csrf_token": token}
        )
        assert accepted.status_code == 303 and "ic_session=" in accepted.headers["set-cookie"]
        assert (await client.get("/dashboard")).status_code == 200
        used = await client.get(path)
        assert used.status_code == 404 and "Not found" in used.text
        assert (
            await client.post(
                path, data={"password": "abcdefgh3", "confirm": "abcdefgh3", "csrf_token": token}
            )
        ).status_code == 404
    assert await hub.hub.accounts.verify_password("newbie", "abcdefgh1") is not None

    expired = await Invites(hub.hub.database, hub.hub.accounts, ttl_s=-1).create(user.id)
    async with _browser(hub) as client:
        assert (await client.get(f"/dashboard/invite/{expired.token}")).status_code == 404
        assert (await client.get("/dashboard/invite/made-up-token")).status_code == 404


async def test_twenty_wrong_passwords_are_throttled(hub: RunningHub) -> None:
    await hub.hub.accounts.create_user("alice", password=PASSWORD)
    limit = hub.settings.login_max_failures
    async with _browser(hub) as client:
        statuses = [(await _sign_in(client, "alice", f"guess {i}")).status_code for i in range(20)]
        assert statuses == [401] * limit + [429] * (20 - limit)
        throttled = await _sign_in(client, "alice")  # even the right password waits now
        assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text
        assert "ic_session" not in throttled.headers.get("set-cookie", "")


async def test_disabled_users_cannot_sign_in(hub: RunningHub) -> None:
    user = await hub.hub.accounts.create_user("alice", password=PASSWORD)
    async with _browser(hub) as client:
        await _sign_in(client, "alice")
        await hub.hub.accounts.set_disabled(user.id, True)
        assert (await client.get("/dashboard")).status_code == 303
        assert (await _sign_in(client, "alice")).status_code == 401
