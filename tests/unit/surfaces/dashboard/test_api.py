"""The dashboard's JSON routes act as the signed-in user: their own keys, jobs, batches and
files only (another user's are 404), admin routes for admins, event streams that end or push changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from inference_club.domain.clock import utcnow
from inference_club.services.sessions import SESSION_COOKIE
from inference_club.store import jobs as jobs_q
from inference_club.testing.servers import free_port, serve_app
from tests.unit.surfaces.dashboard.conftest import PICTURE, Site

pytestmark = pytest.mark.asyncio(loop_scope="module")


def events_of(body: bytes) -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in lines:
            found.append((lines["event"], orjson.loads(lines["data"])))
    return found


async def test_keys_are_the_users_own(site: Site) -> None:
    alice, bob = await site.user("alice"), await site.user("bob")
    theirs = await site.hub.accounts.create_key(bob.username)
    me = site.signed_in(alice)
    async with me.client:
        made = await me.client.post("/dashboard/api/keys", json={"name": "laptop"}, headers=me.with_csrf())
        assert made.status_code == 201 and made.json()["key"].startswith("ic_")
        listed = (await me.client.get("/dashboard/api/keys")).json()
        assert [(k["name"], k["revoked_at"]) for k in listed["data"]] == [("laptop", None)]
        assert made.json()["key"] not in str(listed)  # the secret is shown once
        gone = await me.client.delete(f"/dashboard/api/keys/{made.json()['id']}", headers=me.with_csrf())
        assert gone.status_code == 200 and gone.json()["revoked_at"] is not None
        other = await me.client.delete(f"/dashboard/api/keys/{theirs.key.id}", headers=me.with_csrf())
        assert other.status_code == 404
    assert (await site.hub.auth.authenticate(f"Bearer {theirs.raw}")).user_id == bob.id  # untouched


async def test_providers_models_and_usage_of_a_new_user_are_empty(site: Site) -> None:
    me = site.signed_in(await site.user())
    async with me.client:
        assert (await me.client.get("/dashboard/api/providers")).json() == {"object": "list", "data": []}
        assert (await me.client.get("/dashboard/api/models")).json() == {"object": "list", "data": []}
        usage = await me.client.get("/dashboard/api/usage", params={"days": 2})
        assert usage.status_code == 200 and usage.json()["total"]["requests"] == 0
        assert (await me.client.get("/dashboard/api/usage", params={"days": 0})).status_code == 400


async def test_jobs_cancel_retry_and_their_event_stream(site: Site) -> None:
    alice, bob = await site.user("alice"), await site.user("bob")
    mine, theirs = await site.job(alice), await site.job(bob)
    me = site.signed_in(alice)
    async with me.client:
        assert (
            await me.client.post(f"/dashboard/api/jobs/{theirs.id}/cancel", headers=me.with_csrf())
        ).status_code == 404
        assert (await me.client.get(f"/dashboard/api/jobs/{theirs.id}/events")).status_code == 404
        canceled = await me.client.post(f"/dashboard/api/jobs/{mine.id}/cancel", headers=me.with_csrf())
        assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
        stream = await me.client.get(f"/dashboard/api/jobs/{mine.id}/events")
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert [(name, data["status"]) for name, data in events_of(stream.content)] == [
            ("status", "CANCELED")
        ]
        retried = await me.client.post(f"/dashboard/api/jobs/{mine.id}/retry", headers=me.with_csrf())
        assert retried.status_code == 202 and retried.json()["status"] == "QUEUED"
    async with site.hub.database.read() as session:
        job = await jobs_q.get_job(session, job_id=theirs.id, user_id=None)
    assert job is not None and job.status == "QUEUED"


async def test_batches_cancel_and_stream_until_done(site: Site) -> None:
    alice, bob = await site.user("alice"), await site.user("bob")
    mine, theirs = (await site.batch(alice)).id, (await site.batch(bob)).id
    me = site.signed_in(alice)
    async with me.client:
        assert (
            await me.client.post(f"/dashboard/api/batches/{theirs}/cancel", headers=me.with_csrf())
        ).status_code == 404
        assert (await me.client.get(f"/dashboard/api/batches/{theirs}/events")).status_code == 404
        canceled = await me.client.post(f"/dashboard/api/batches/{mine}/cancel", headers=me.with_csrf())
        assert canceled.status_code == 200
        stream = await me.client.get(f"/dashboard/api/batches/{mine}/events")  # ends: the batch is done
        assert [(name, data["status"]) for name, data in events_of(stream.content)] == [("batch", "DONE")]


async def test_files_delete_and_share_only_the_owners(site: Site) -> None:
    alice, bob = await site.user("alice"), await site.user("bob")
    mine, theirs = await site.file(alice), await site.file(bob)
    me = site.signed_in(alice)
    async with me.client:
        assert (
            await me.client.post(f"/dashboard/api/files/{theirs.id}/share", headers=me.with_csrf())
        ).status_code == 404
        assert (
            await me.client.delete(f"/dashboard/api/files/{theirs.id}", headers=me.with_csrf())
        ).status_code == 404
        shared = await me.client.post(
            f"/dashboard/api/files/{mine.id}/share", json={"expires_in": 60}, headers=me.with_csrf()
        )
        assert shared.status_code == 200
        link = shared.json()
        assert link["url"].startswith(f"http://hub.test/v1/files/{mine.id}/content?exp=")
        assert 0 < link["expires_at"] - utcnow().timestamp() <= 61
        async with site.anonymous() as stranger:  # the link alone opens it
            opened = await stranger.get(link["url"])
        assert opened.status_code == 200 and opened.content == PICTURE
        deleted = await me.client.delete(f"/dashboard/api/files/{mine.id}", headers=me.with_csrf())
        assert deleted.json() == {"id": mine.id, "object": "file", "deleted": True}
    assert not await site.hub.files.store.exists(mine.storage_key)
    assert await site.hub.files.store.exists(theirs.storage_key)


async def test_admin_routes_manage_users(site: Site) -> None:
    admin = await site.user("root", admin=True)
    me = site.signed_in(admin)
    async with me.client:
        made = await me.client.post(
            "/dashboard/api/admin/users", json={"username": "newcomer"}, headers=me.with_csrf()
        )
        assert made.status_code == 201 and made.json()["has_password"] is False
        user_id = made.json()["id"]
        invite = await me.client.post(f"/dashboard/api/admin/users/{user_id}/invite", headers=me.with_csrf())
        assert invite.json()["url"].startswith("http://hub.test/dashboard/invite/")
        disabled = await me.client.post(
            f"/dashboard/api/admin/users/{user_id}/disable", headers=me.with_csrf()
        )
        assert disabled.json()["disabled"] is True
        enabled = await me.client.post(f"/dashboard/api/admin/users/{user_id}/enable", headers=me.with_csrf())
        assert enabled.json()["disabled"] is False
        myself = await me.client.post(
            f"/dashboard/api/admin/users/{admin.id}/disable", headers=me.with_csrf()
        )
        assert myself.status_code == 409
        names = [u["username"] for u in (await me.client.get("/dashboard/api/admin/users")).json()["data"]]
        assert "newcomer" in names and admin.username in names


async def test_the_playground_calls_inference_as_the_user(site: Site) -> None:
    me = site.signed_in(await site.user())
    body = {"model": "nobody-serves-this", "messages": [{"role": "user", "content": "hi"}]}
    async with me.client:
        assert (await me.client.post("/dashboard/api/v1/chat/completions", json=body)).status_code == 403
        answer = await me.client.post("/dashboard/api/v1/chat/completions", json=body, headers=me.with_csrf())
    assert answer.status_code == 404 and "nobody-serves-this" in answer.json()["error"]["message"]


async def next_event(lines: AsyncIterator[str]) -> tuple[str, Any]:
    name = ""
    async for line in lines:
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: ") and name:
            return name, orjson.loads(line[len("data: ") :])
    raise AssertionError("the stream ended")


async def test_the_live_overview_pushes_a_change(site: Site) -> None:
    """An endless stream: served on a real socket (the in-process transport waits for the end)."""
    user = await site.user()
    me = site.signed_in(user)
    await me.client.aclose()
    key = (await site.hub.accounts.create_key(user.username)).raw
    async with serve_app(site.running.app, lifespan="off") as base_url:
        async with (
            httpx.AsyncClient(base_url=base_url, cookies={SESSION_COOKIE: me.cookie}, timeout=10) as client,
            client.stream("GET", "/dashboard/api/live") as stream,
        ):
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            name, first = await next_event(lines)
            assert name == "state" and first["machines"] == [] and set(first["jobs"]) == {"counts", "active"}
            beat = await site.running.client.post(
                "/api/inference/agent/heartbeat",
                headers={"authorization": f"Bearer {key}"},
                json={"name": "rig", "callback_url": f"http://127.0.0.1:{free_port()}", "services": []},
            )
            assert beat.status_code == 200
            async with asyncio.timeout(10):
                name, second = await next_event(lines)
    assert name == "state" and [m["name"] for m in second["machines"]] == ["rig"]
