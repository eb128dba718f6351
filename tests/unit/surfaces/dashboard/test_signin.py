"""Sign-in, sign-out and invite links: cookie flags, throttling, safe redirects, one-use invites."""

from __future__ import annotations

import httpx
import pytest

from inference_club.services.sessions import ANONYMOUS_COOKIE, SESSION_COOKIE
from inference_club.store.tables import User
from inference_club.surfaces.dashboard.signin import _safe_next
from tests.unit.surfaces.dashboard.conftest import PASSWORD, Site, csrf_of

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD, next: str = "/dashboard/jobs"
) -> httpx.Response:
    token = csrf_of(await client.get("/dashboard/login"))
    return await client.post(
        "/dashboard/login",
        data={"username": username, "password": password, "csrf_token": token, "next": next},
    )


async def test_signing_in_sets_a_lax_http_only_session_cookie(site: Site) -> None:
    user = await site.user(password=PASSWORD)
    async with site.anonymous("10.1.0.1") as client:
        signed = await sign_in(client, user.username)
        assert signed.status_code == 303 and signed.headers["location"] == "/dashboard/jobs"
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Path=/" in cookie and f"Max-Age={int(site.hub.settings.session_ttl_s)}" in cookie
        assert "Secure" not in cookie
        page = await client.get("/dashboard")
        assert page.status_code == 200 and user.username in page.text
        # The session never authorizes the API.
        assert (await client.get("/v1/models")).status_code == 401
        out = await client.post("/dashboard/logout", data={"csrf_token": csrf_of(page)})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
        assert (
            f'{SESSION_COOKIE}=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
        )
        assert (await client.get("/dashboard")).status_code == 303


async def test_behind_a_tls_proxy_the_session_cookie_is_secure(site: Site) -> None:
    user = await site.user(password=PASSWORD)
    async with site.anonymous("10.1.0.2", **{"x-forwarded-proto": "https"}) as client:
        form = await client.get("/dashboard/login")
        # The client speaks plain HTTP, so its jar would not send the Secure cookie back.
        signed = await client.post(
            "/dashboard/login",
            data={
                "username": user.username,
                "password": PASSWORD,
                "csrf_token": csrf_of(form),
                "next": "//evil.example/",
            },
            headers={"cookie": f"{ANONYMOUS_COOKIE}={form.cookies[ANONYMOUS_COOKIE]}"},
        )
    assert signed.status_code == 303 and "Secure" in signed.headers["set-cookie"]
    assert signed.headers["location"] == "/dashboard"  # never off-site


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("/dashboard/files?kind=image", "/dashboard/files?kind=image"),
        ("//evil.example/", "/dashboard"),
        ("https://evil.example/", "/dashboard"),
        ("/\\evil.example", "/dashboard"),
        ("dashboard", "/dashboard"),
        ("", "/dashboard"),
        (None, "/dashboard"),
    ],
)
async def test_after_sign_in_only_a_path_on_this_hub(target: str | None, landing: str) -> None:
    assert _safe_next(target) == landing


async def test_failures_are_throttled_per_user_and_per_address(site: Site) -> None:
    victim, bystander = await site.user(password=PASSWORD), await site.user(password=PASSWORD)
    limit = site.hub.settings.login_max_failures
    async with site.anonymous("10.1.0.4") as attacker:
        for _ in range(limit):
            wrong = await sign_in(attacker, victim.username, "not the password")
            assert wrong.status_code == 401 and "Wrong username or password." in wrong.text
        locked = await sign_in(attacker, victim.username)  # even the right password now waits
        assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
        assert (await sign_in(attacker, bystander.username)).status_code == 429  # this address is locked out
    async with site.anonymous("10.1.0.5") as elsewhere:
        assert (await sign_in(elsewhere, victim.username)).status_code == 429  # so is this user
        assert (await sign_in(elsewhere, bystander.username)).status_code == 303


async def test_an_api_key_is_not_a_password_and_the_form_needs_its_token(site: Site) -> None:
    user = await site.user(password=PASSWORD)
    key = (await site.hub.accounts.create_key(user.username)).raw
    async with site.anonymous("10.1.0.6") as client:
        assert (await sign_in(client, user.username, key)).status_code == 401
        no_token = await client.post(
            "/dashboard/login", data={"username": user.username, "password": PASSWORD}
        )
        assert no_token.status_code == 403
    async with site.anonymous("10.1.0.6") as fresh:  # a token without the cookie it is bound to
        token = csrf_of(await fresh.get("/dashboard/login"))
    async with site.anonymous("10.1.0.6") as other:
        stolen = await other.post(
            "/dashboard/login", data={"username": user.username, "password": PASSWORD, "csrf_token": token}
        )
    assert stolen.status_code == 403


async def invite_token(site: Site, user: User) -> str:
    return (await site.hub.invites.create(user.id)).token


async def test_an_invite_sets_the_password_once_and_signs_in(site: Site) -> None:
    user = await site.user()
    token = await invite_token(site, user)
    path = f"/dashboard/invite/{token}"
    async with site.anonymous("10.1.0.7") as client:
        form = await client.get(path)
        assert form.status_code == 200 and user.username in form.text
        csrf = csrf_of(form)
        differ = await client.post(
            path, data={"password": PASSWORD, "confirm": PASSWORD + "!", "csrf_token": csrf}
        )
        assert differ.status_code == 400 and "The two passwords differ." in differ.text
        short = await client.post(path, data={"password": "short", "confirm": "short", "csrf_token": csrf})
        assert short.status_code == 400 and "password must be" in short.text
        assert (await client.post(path, data={"password": PASSWORD, "confirm": PASSWORD})).status_code == 403
        accepted = await client.post(
            path, data={"password": PASSWORD, "confirm": PASSWORD, "csrf_token": csrf}
        )
        assert accepted.status_code == 303 and accepted.headers["location"] == "/dashboard"
        assert accepted.headers["set-cookie"].startswith(f"{SESSION_COOKIE}=")
        assert (await client.get("/dashboard")).status_code == 200
        again = await client.post(path, data={"password": PASSWORD, "confirm": PASSWORD, "csrf_token": csrf})
        assert again.status_code == 404
        assert (await client.get(path)).status_code == 404


async def test_an_unknown_invite_is_not_found(site: Site) -> None:
    async with site.anonymous("10.1.0.8") as client:
        page = await client.get("/dashboard/invite/not-a-token")
    assert page.status_code == 404 and "invite link is unknown" in page.text
