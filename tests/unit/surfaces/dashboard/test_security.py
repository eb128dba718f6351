"""Who the dashboard lets in: the signed session cookie only, tied to the password and the
user's state; CSRF on every state change; strict headers on every answer."""

from __future__ import annotations

import pytest

from inference_club.services.sessions import ANONYMOUS_COOKIE, SESSION_COOKIE, SessionSigner
from inference_club.surfaces.dashboard.security import CONTENT_SECURITY_POLICY
from tests.unit.surfaces.dashboard.conftest import Site

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_pages_redirect_to_sign_in_and_json_routes_answer_401(site: Site) -> None:
    async with site.anonymous() as client:
        page = await client.get("/dashboard/jobs", params={"status": "FAILED"})
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fjobs%3Fstatus%3DFAILED"
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        api = await client.get("/dashboard/api/keys")
        assert api.status_code == 401 and api.json() == {"detail": "Sign in to the dashboard first."}
        assert (
            api.headers["cache-control"] == "no-store" and api.headers["x-content-type-options"] == "nosniff"
        )


async def test_a_signed_in_page_carries_the_strict_headers(site: Site) -> None:
    me = site.signed_in(await site.user())
    async with me.client:
        page = await me.client.get("/dashboard/settings/token")
    assert page.status_code == 200 and me.csrf in page.text
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert page.headers["referrer-policy"] == "same-origin" and page.headers["cache-control"] == "no-store"


async def test_forged_foreign_and_stale_sessions_are_not_signed_in(site: Site) -> None:
    user = await site.user()
    cookie, _ = site.dashboard.signer.issue(user.id, user.password_hash)
    foreign, _ = SessionSigner("another hub's secret", ttl_s=60).issue(user.id, user.password_hash)
    expired, _ = site.dashboard.signer.issue(user.id, user.password_hash, now=0)
    unknown, _ = site.dashboard.signer.issue("usr_nobody", None)
    payload, _, signature = cookie.rpartition(".")
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature
    for bad in (foreign, expired, unknown, tampered, "garbage"):
        async with site.anonymous() as client:
            client.cookies.set(SESSION_COOKIE, bad)
            assert (await client.get("/dashboard")).status_code == 303, bad
    async with site.anonymous() as client:
        client.cookies.set(SESSION_COOKIE, cookie)
        assert (await client.get("/dashboard")).status_code == 200


async def test_a_new_password_or_disabling_ends_the_session(site: Site) -> None:
    changed, disabled = await site.user(), await site.user()
    first, second = site.signed_in(changed), site.signed_in(disabled)
    async with first.client, second.client:
        assert (await first.client.get("/dashboard")).status_code == 200
        assert (await second.client.get("/dashboard")).status_code == 200
        await site.hub.accounts.set_password(changed.id, "a new long password")
        await site.hub.accounts.set_disabled(disabled.id, True)
        assert (await first.client.get("/dashboard")).status_code == 303
        assert (await second.client.get("/dashboard")).status_code == 303


async def test_an_api_key_never_authorizes_the_dashboard(site: Site) -> None:
    user = await site.user()
    key = (await site.hub.accounts.create_key(user.username)).raw
    async with site.anonymous(authorization=f"Bearer {key}") as client:
        assert (await client.get("/dashboard")).status_code == 303
        assert (await client.get("/dashboard/api/keys")).status_code == 401
        client.cookies.set(SESSION_COOKIE, key)
        assert (await client.get("/dashboard/api/keys")).status_code == 401


async def test_state_changes_need_the_sessions_csrf_token_from_this_origin(site: Site) -> None:
    me, other = site.signed_in(await site.user()), site.signed_in(await site.user())
    async with me.client, other.client:
        create = "/dashboard/api/keys"
        assert (await me.client.post(create, json={"name": "a"})).status_code == 403
        assert (
            await me.client.post(create, json={"name": "a"}, headers={"x-csrf-token": "forged"})
        ).status_code == 403
        # Another session's token is no good here.
        assert (
            await me.client.post(create, json={"name": "a"}, headers=other.with_csrf())
        ).status_code == 403
        cross_site = {**me.with_csrf(), "origin": "https://evil.example"}
        assert (await me.client.post(create, json={"name": "a"}, headers=cross_site)).status_code == 403
        same_site = {**me.with_csrf(), "origin": "http://hub.test"}
        made = await me.client.post(create, json={"name": "a"}, headers=same_site)
        assert made.status_code == 201 and made.json()["key"].startswith("ic_")
        # Forms carry it as a field; a refused page answer is an HTML error page.
        refused = await me.client.post("/dashboard/logout", data={"csrf_token": "forged"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert refused.headers["content-type"].startswith("text/html")
        assert (await me.client.post("/dashboard/logout", data={"csrf_token": me.csrf})).status_code == 303


async def test_admin_pages_are_not_found_for_others(site: Site) -> None:
    plain, admin = site.signed_in(await site.user()), site.signed_in(await site.user("root", admin=True))
    async with plain.client, admin.client:
        page = await plain.client.get("/dashboard/admin")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert (await plain.client.get("/dashboard/api/admin/users")).status_code == 404
        assert (await admin.client.get("/dashboard/admin")).status_code == 200
        assert (await admin.client.get("/dashboard/api/admin/users")).status_code == 200


async def test_hub_errors_become_html_pages_with_their_status(site: Site) -> None:
    me = site.signed_in(await site.user())
    async with me.client:
        missing = await me.client.get("/dashboard/jobs/job_missing")
    assert missing.status_code == 404 and "job_missing" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    assert me.csrf in missing.text  # the error page keeps the signed-in navigation


async def test_the_anonymous_cookie_is_secure_behind_a_tls_proxy(site: Site) -> None:
    async with (
        site.anonymous() as plain,
        site.anonymous(**{"x-forwarded-proto": "https, http"}) as behind_tls,
    ):
        cookie = (await plain.get("/dashboard/login")).headers["set-cookie"]
        assert cookie.startswith(f"{ANONYMOUS_COOKIE}=") and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Path=/dashboard" in cookie and "Secure" not in cookie
        assert "Secure" in (await behind_tls.get("/dashboard/login")).headers["set-cookie"]
