"""Workflow pages: the gallery's form starts a run as the signed-in user, a bad form comes back
with its values and the error, the run page draws the graph, another user's run is 404."""

from __future__ import annotations

import re

import pytest

from inference_club.store.tables import User
from inference_club.testing.servers import free_port
from tests.unit.surfaces.dashboard.conftest import Browser, Site

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def start(me: Browser, **fields: str) -> str:
    answer = await me.client.post("/dashboard/workflows/runs", data={"csrf_token": me.csrf, **fields})
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("/dashboard/workflows/runs/")
    return location.rsplit("/", 1)[1]


async def online(site: Site, user: User) -> None:
    """Give the user a machine serving what the templates need (its jobs go nowhere: these
    tests look at the pages, not at runs finishing)."""
    key = (await site.hub.accounts.create_key(user.username)).raw
    beat = await site.running.client.post(
        "/api/inference/agent/heartbeat",
        headers={"authorization": f"Bearer {key}"},
        json={
            "name": "rig",
            "callback_url": f"http://127.0.0.1:{free_port()}",
            "services": [{"type": t, "models": [{"id": f"{t}-model"}]} for t in ("llm", "image")],
        },
    )
    assert beat.status_code == 200, beat.text


async def run_of(site: Site, user: User) -> str:
    await online(site, user)
    me = site.signed_in(user)
    async with me.client:
        return await start(me, template="image-variations", input_subject="a lighthouse")


async def test_the_gallery_lists_templates_and_the_users_runs(site: Site) -> None:
    user = await site.user()
    mine, theirs = await run_of(site, user), await run_of(site, await site.user())
    me = site.signed_in(user)
    async with me.client:
        page = await me.client.get("/dashboard/workflows")
    assert page.status_code == 200
    for key in ("illustrated-story", "image-variations", "song-and-cover"):
        assert f'value="{key}"' in page.text
    assert mine in page.text and theirs not in page.text


async def test_a_started_run_uses_the_templates_defaults_for_empty_fields(site: Site) -> None:
    user = await site.user()
    await online(site, user)
    me = site.signed_in(user)
    async with me.client:
        run_id = await start(
            me, template="image-variations", input_subject="a lighthouse", input_count="  ", input_vibe=""
        )
        shown = await me.client.get(f"/dashboard/workflows/runs/{run_id}")
        as_json = await me.client.get(f"/dashboard/api/workflows/runs/{run_id}")
    assert shown.status_code == 200 and '<svg class="dag"' in shown.text
    run = as_json.json()
    assert run["inputs"]["subject"] == "a lighthouse" and run["inputs"]["count"] == 4
    assert run["inputs"]["vibe"] == "cinematic, highly detailed"
    drawn_steps = set(re.findall(r'data-step="([^"]+)"', shown.text))
    assert drawn_steps == {step["id"] for step in run["steps"]} and drawn_steps
    assert run["files"] == []


async def test_a_refused_form_comes_back_with_the_error_and_its_values(site: Site) -> None:
    me = site.signed_in(await site.user())
    async with me.client:
        missing = await me.client.post(
            "/dashboard/workflows/runs",
            data={"csrf_token": me.csrf, "template": "image-variations", "input_vibe": "moody <noir>"},
        )
        unknown = await me.client.post(
            "/dashboard/workflows/runs", data={"csrf_token": me.csrf, "template": "nope"}
        )
        no_token = await me.client.post("/dashboard/workflows/runs", data={"template": "image-variations"})
    assert missing.status_code == 400 and 'role="alert"' in missing.text and "subject" in missing.text
    assert 'value="moody &lt;noir&gt;"' in missing.text  # the user's value, escaped, back in the form
    assert unknown.status_code == 404 and 'role="alert"' in unknown.text
    assert no_token.status_code == 403


async def test_another_users_run_is_not_found_anywhere(site: Site) -> None:
    theirs = await run_of(site, await site.user())
    me = site.signed_in(await site.user())
    async with me.client:
        assert (await me.client.get(f"/dashboard/workflows/runs/{theirs}")).status_code == 404
        assert (await me.client.get(f"/dashboard/api/workflows/runs/{theirs}")).status_code == 404
        assert (await me.client.get(f"/dashboard/api/workflows/runs/{theirs}/events")).status_code == 404
        cancel = await me.client.post(
            f"/dashboard/api/workflows/runs/{theirs}/cancel", headers=me.with_csrf()
        )
        assert cancel.status_code == 404
        approve = await me.client.post(
            f"/dashboard/api/workflows/runs/{theirs}/steps/review/approve", headers=me.with_csrf()
        )
        assert approve.status_code == 404


async def test_the_owner_cancels_a_run(site: Site) -> None:
    user = await site.user()
    run_id = await run_of(site, user)
    me = site.signed_in(user)
    async with me.client:
        assert (await me.client.post(f"/dashboard/api/workflows/runs/{run_id}/cancel")).status_code == 403
        canceled = await me.client.post(
            f"/dashboard/api/workflows/runs/{run_id}/cancel", headers=me.with_csrf()
        )
    assert canceled.status_code == 200 and canceled.json()["status"] == "CANCELED"
