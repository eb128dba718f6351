"""The dashboard in a real Chromium: sign-in, keys, live machines, playground, batches, media."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import orjson
import pytest

from inference_club.testing.fake_state import Fault
from tests.browser.conftest import PASSWORD, BrowserEnv
from tests.e2e.conftest import start_agent, write_agent_config
from tests.integration.conftest import run_agent, services_for
from tests.polling import eventually

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

TIMEOUT_MS = 30_000


async def test_sign_in_with_a_password_lands_on_the_overview(env: BrowserEnv) -> None:
    context = await env.browser.new_context(base_url=env.url)
    try:
        checked = await env.open(context, "/", "sign-in")
        page = checked.page
        assert "/dashboard/login" in page.url  # not signed in: sent to the sign-in page
        await page.fill("#username", "alice")
        await page.fill("#password", PASSWORD)
        async with page.expect_navigation():
            await page.click("button[type=submit]")
        await page.wait_for_selector("h1:has-text('Overview')")
        assert await page.locator(".who").text_content() == "alice"
        cookie = next(c for c in await context.cookies() if c["name"] == "ic_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["expires"] > 0
        await env.finish(checked)
    finally:
        await context.close()


async def test_a_key_made_on_the_token_page_works_with_the_sdk_until_revoked(env: BrowserEnv) -> None:
    context = await env.context("alice")
    checked = await env.open(context, "/dashboard/settings/token", "token")
    page = checked.page
    await page.fill("#key-name", "browser-made")
    await page.click("#key-form button[type=submit]")
    await page.wait_for_selector("#new-key:not([hidden])")
    key = (await page.locator("#new-key-value").text_content() or "").strip()
    assert key.startswith("ic_")
    snippet = await page.locator("#new-key-snippet").text_content() or ""
    assert f'base_url="{env.url}/v1"' in snippet and key in snippet

    client = openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key=key, max_retries=0)
    models = await client.models.list()
    assert "fake-chat" in [m.id for m in models.data]

    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    row = page.locator("tr", has_text="browser-made")
    await row.locator("button.revoke").click()
    await row.locator(".state", has_text="revoked").wait_for(timeout=TIMEOUT_MS)
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()
    await env.finish(checked)


async def test_a_machine_appears_live_and_goes_offline_when_its_agent_is_killed(
    env: BrowserEnv, tmp_path: Path
) -> None:
    context = await env.context("alice")
    checked = await env.open(context, "/dashboard/machines", "machines")
    page = checked.page
    await page.locator("#live-state", has_text="live").wait_for(timeout=TIMEOUT_MS)
    assert await page.locator("tr[data-provider]", has_text="killable-rig").count() == 0
    await page.evaluate("window.__sameDocument = true")

    config = write_agent_config(tmp_path / "agent.toml", services_for(env.engine_url, types=["llm"]))
    agent = start_agent(tmp_path, env.url, env.alice_key, "killable-rig", config, transport="tunnel")
    try:
        row = page.locator("tr[data-provider]", has_text="killable-rig")
        await row.locator(".state", has_text="online").wait_for(timeout=TIMEOUT_MS)
        await page.screenshot(path=str(env.artifacts / "machines-online.png"), full_page=True)
        agent.kill()
        await row.locator(".state", has_text="offline").wait_for(timeout=TIMEOUT_MS)
    finally:
        agent.stop(timeout=3)
    assert await page.evaluate("window.__sameDocument") is True  # updated without a reload

    # The connect panel prints the exact command with this hub and a fresh key.
    await page.fill("#machine-name", "new-box")
    await page.click("#connect-key")
    await page.locator("#connect-command", has_text="--key ic_").wait_for(timeout=TIMEOUT_MS)
    command = await page.locator("#connect-command").text_content() or ""
    assert (
        command.startswith(f"inference-club agent --hub {env.url} --key ic_") and "--name new-box" in command
    )
    await env.finish(checked)


async def test_playground_chat_streams_tokens(env: BrowserEnv) -> None:
    env.engine.settings.update({"reply": "one two three four five six", "chunk_delay_s": 0.05})
    try:
        context = await env.context("alice")
        checked = await env.open(context, "/dashboard/playground", "playground")
        page = checked.page
        await page.select_option("#chat-model", "fake-chat")
        # Count how often the reply text changes: a stream renders piece by piece.
        await page.evaluate("""() => {
            window.__replyUpdates = 0;
            new MutationObserver(() => { window.__replyUpdates += 1; })
              .observe(document.getElementById('chat-log'), {subtree: true, characterData: true, childList: true});
        }""")
        await page.fill("#chat-input", "Count to six")
        await page.click("#chat-form button[type=submit]")
        reply = page.locator("#chat-log .assistant .reply")
        await reply.filter(has_text="one two three four five six").wait_for(timeout=TIMEOUT_MS)
        assert (await reply.text_content() or "").strip() == "one two three four five six"
        assert await page.evaluate("window.__replyUpdates") >= 4  # several deltas, not one answer
        await page.locator("#chat-stop[disabled]").wait_for(timeout=TIMEOUT_MS)
        await env.finish(checked)
    finally:
        env.engine.settings.update({"reply": None, "chunk_delay_s": 0.0})


async def test_playground_image_and_speech(env: BrowserEnv) -> None:
    context = await env.context("alice")
    checked = await env.open(context, "/dashboard/playground", "playground-media")
    page = checked.page
    await page.fill("#image-prompt", "a fox")
    await page.click("#image-form button[type=submit]")
    image = page.locator("#image-out img")
    await image.wait_for(timeout=TIMEOUT_MS)
    await page.wait_for_function("() => document.querySelector('#image-out img').naturalWidth > 0")
    await page.fill("#speech-input", "Hello there")
    await page.click("#speech-form button[type=submit]")
    await page.locator("#speech-out audio").wait_for(timeout=TIMEOUT_MS)
    await env.finish(checked)


async def test_batch_counts_move_without_a_reload(env: BrowserEnv) -> None:
    # A slow, one-at-a-time provider keeps the batch running long enough to watch it.
    fault = env.engine.add_fault(Fault(latency_s=1.0, path="/v1/chat/completions", model="fake-batch"))
    services = [
        {
            "type": "llm",
            "url": f"{env.engine_url}/v1",
            "max_concurrency": 1,
            "discover": False,
            "models": [{"id": "fake-batch"}],
        }
    ]
    try:
        async with (
            run_agent(env.url, env.alice_key, "batch-rig", services, transport="tunnel"),
            env.http(env.alice_key) as http,
        ):
            body = {"model": "fake-batch", "messages": [{"role": "user", "content": "hi"}]}
            created = await http.post(
                "/v1/batches",
                json={
                    "label": "watch me",
                    "requests": [{"endpoint": "/v1/chat/completions", "body": body}] * 4,
                },
            )
            assert created.status_code == 202, created.text
            batch_id = created.json()["id"]

            context = await env.context("alice")
            checked = await env.open(context, f"/dashboard/batches/{batch_id}", "batch")
            page = checked.page
            await page.evaluate("window.__sameDocument = true")
            first = int(await page.locator("#count-processed").text_content() or "0")
            assert first < 4
            await page.locator("#count-processed", has_text="4").wait_for(timeout=TIMEOUT_MS)
            await page.locator("#batch-status", has_text="DONE").wait_for(timeout=TIMEOUT_MS)
            assert await page.evaluate("window.__sameDocument") is True
            await env.finish(checked)
    finally:
        env.engine.faults.remove(fault)


async def test_an_image_job_shows_its_image(env: BrowserEnv) -> None:
    async with env.http(env.alice_key) as http:
        queued = await http.post(
            "/v1/images/generations", json={"model": "fake-image", "prompt": "a fox", "async": True}
        )
        assert queued.status_code == 202, queued.text
        job_id = queued.json()["id"]
        done = (await http.get(f"/v1/jobs/{job_id}", params={"wait": 30})).json()
        assert done["status"] == "PROCESSED", done
    context = await env.context("alice")
    checked = await env.open(context, f"/dashboard/jobs/{job_id}", "job-image")
    page = checked.page
    await page.wait_for_function(
        "() => { const i = document.querySelector('.gallery img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=TIMEOUT_MS,
    )
    src = await page.locator(".gallery img").get_attribute("src") or ""
    assert src.startswith(f"/v1/files/{done['files'][0]['id']}/content?")
    await env.finish(checked)

    # The files page shows it too, with a working share link.
    checked = await env.open(context, "/dashboard/files?kind=image", "files")
    page = checked.page
    card = page.locator(f"li.file[data-file='{done['files'][0]['id']}']")
    await card.locator("button.share").click()
    share = card.locator(".share-url")
    await page.wait_for_function(
        "(id) => { const i = document.querySelector(`li.file[data-file='${id}'] .share-url`);"
        " return i && i.value.length > 0; }",
        arg=done["files"][0]["id"],
        timeout=TIMEOUT_MS,
    )
    url = await share.input_value()
    async with env.http("") as anonymous:
        anonymous.headers.pop("Authorization")
        fetched = await anonymous.get(url)
        assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("image/")
    await env.finish(checked)


async def test_a_running_job_page_follows_the_job_live(env: BrowserEnv) -> None:
    fault = env.engine.add_fault(
        Fault(latency_s=1.5, path="/v1/chat/completions", model="fake-chat", times=1)
    )
    try:
        async with env.http(env.alice_key) as http:
            queued = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "fake-chat",
                    "messages": [{"role": "user", "content": "slowly"}],
                    "async": True,
                },
            )
            job_id = queued.json()["id"]
        context = await env.context("alice")
        checked = await env.open(context, f"/dashboard/jobs/{job_id}", "job-live")
        page = checked.page
        await page.locator("#job-status", has_text="PROCESSED").wait_for(timeout=TIMEOUT_MS)
        await page.locator("pre.answer").wait_for(timeout=TIMEOUT_MS)  # the finished page shows the answer
        await env.finish(checked)
    finally:
        if fault in env.engine.faults:
            env.engine.faults.remove(fault)


PAGES = [
    ("/", "overview"),
    ("/dashboard/settings/token", "token-list"),
    ("/dashboard/machines", "machines-list"),
    ("/dashboard/models", "models"),
    ("/dashboard/models?modality=image", "models-image"),
    ("/dashboard/jobs", "jobs"),
    ("/dashboard/batches", "batches"),
    ("/dashboard/files", "files-all"),
    ("/dashboard/playground", "playground-empty"),
    ("/dashboard/workflows", "workflows"),
]


@pytest.mark.parametrize("width", [1100, 375])
async def test_every_page_is_clean_and_fits(env: BrowserEnv, width: int) -> None:
    # A name with no place to break must wrap, not widen the page on a phone.
    async with env.http(env.alice_key) as http:
        long_name = "scene-" + "x" * 80 + ".bin"
        uploaded = await http.post(
            "/v1/files", files={"file": (long_name, b"\0" * 16, "application/octet-stream")}
        )
        assert uploaded.status_code == 200, uploaded.text
    for who, pages in (("alice", PAGES), ("admin", [*PAGES[:1], ("/dashboard/admin", "admin")])):
        context = await env.context(who, width=width)
        for path, name in pages:
            checked = await env.open(context, path, f"{name}-{who}-{width}")
            page = checked.page
            await page.wait_for_load_state("load")
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            wide = await page.evaluate("""() => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll'))
                .map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 5)""")
            assert overflow <= 1, f"{path} is wider than {width} px by {overflow} px: {wide}"
            # Every form control has a label.
            unlabelled = await page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
                .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map(e => e.id || e.name || e.outerHTML)""")
            assert not unlabelled, f"{path}: unlabelled controls {unlabelled}"
            await env.finish(checked)


async def test_pages_are_keyboard_reachable(env: BrowserEnv) -> None:
    context = await env.context("alice")
    checked = await env.open(context, "/dashboard/settings/token", "keyboard")
    page = checked.page
    reached = set()
    for _ in range(40):
        await page.keyboard.press("Tab")
        reached.add(
            await page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        )
    assert {"Skip to content", "Machines", "key-name", "Create key", "Sign out"} <= reached
    await env.finish(checked)


async def test_another_users_objects_answer_the_404_page(env: BrowserEnv) -> None:
    async with env.http(env.alice_key) as http:
        job = (
            await http.post(
                "/v1/chat/completions",
                json={"model": "fake-chat", "messages": [{"role": "user", "content": "mine"}], "async": True},
            )
        ).json()
        uploaded = await http.post(
            "/v1/files", files={"file": ("alice.png", b"\x89PNG\r\n\x1a\nxx", "image/png")}
        )
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        run = (
            await http.post(
                "/v1/workflows/runs",
                json={"template": "image-variations", "inputs": {"subject": "a fox", "count": 1}},
            )
        ).json()
    context = await env.context("bob")
    for path in (
        f"/dashboard/jobs/{job['id']}",
        f"/dashboard/files/{file_id}",
        "/dashboard/batches/batch_nope",
        f"/dashboard/workflows/runs/{run['id']}",
    ):
        checked = await env.open(context, path, "not-found", allow_errors=["404"])
        response = await checked.page.reload()
        assert response is not None and response.status == 404
        assert await checked.page.locator("h1").text_content() == "Not found"
        await env.finish(checked)
    # Alice herself sees them.
    own = await env.open(
        await env.context("alice"),
        f"/dashboard/files/{file_id}",
        "own-file",
        allow_errors=["Failed to load resource"],
    )  # the fake PNG does not decode
    assert await own.page.locator("h1").text_content() == "alice.png"
    await own.page.close()
    # A member does not see the admin page at all.
    checked = await env.open(context, "/dashboard/admin", "admin-hidden", allow_errors=["404"])
    assert await checked.page.locator("h1").text_content() == "Not found"
    await env.finish(checked)


async def test_an_invite_link_signs_in_once(env: BrowserEnv) -> None:
    async with env.http(env.admin_key) as http:
        user = (await http.post("/v1/admin/users", json={"username": "dora"})).json()
        invite = (await http.post(f"/v1/admin/users/{user['id']}/invite")).json()
    context = await env.browser.new_context(base_url=env.url)
    try:
        checked = await env.open(context, invite["url"], "invite")
        page = checked.page
        await page.fill("#password", "a new password")
        await page.fill("#confirm", "a new password")
        async with page.expect_navigation():
            await page.click("button[type=submit]")
        await page.wait_for_selector("h1:has-text('Overview')")
        assert await page.locator(".who").text_content() == "dora"
        await env.finish(checked)
        again = await env.open(context, invite["url"], "invite-used", allow_errors=["404"])
        assert await again.page.locator("h1").text_content() == "Not found"
        await env.finish(again)
    finally:
        await context.close()


async def test_admin_creates_a_user_and_an_invite_in_the_page(env: BrowserEnv) -> None:
    context = await env.context("admin")
    checked = await env.open(context, "/dashboard/admin", "admin-invite")
    page = checked.page
    await page.fill("#new-username", "erin")
    await page.click("#user-form button[type=submit]")
    await page.wait_for_selector("#invite-out:not([hidden])")
    url = await page.locator("#invite-url").text_content() or ""
    assert url.startswith(f"{env.url}/dashboard/invite/")
    await env.finish(checked)


STORY = {
    "title": "Cat at sea",
    "scenes": [
        {"narration": "The cat wakes.", "image_prompt": "a cat in a lighthouse"},
        {"narration": "The cat sails.", "image_prompt": "a cat in a boat"},
    ],
}


async def test_a_template_run_is_approved_in_the_page_and_finishes(env: BrowserEnv) -> None:
    env.engine.settings.replies = [["illustrated story", orjson.dumps(STORY).decode()]]
    try:
        context = await env.context("alice")
        checked = await env.open(context, "/dashboard/workflows", "workflows-gallery")
        page = checked.page
        form = page.locator("form[data-template='illustrated-story']")
        await form.get_by_label("What is the story about?").fill("a lighthouse cat")
        await form.get_by_label("Scenes").fill("2")
        async with page.expect_navigation():
            await form.locator("button[type=submit]").click()
        assert "/dashboard/workflows/runs/run_" in page.url
        await env.finish(checked)

        run_id = page.url.rsplit("/", 1)[1]
        checked = await env.open(context, f"/dashboard/workflows/runs/{run_id}", "workflow-run")
        page = checked.page
        assert await page.locator("svg.dag g.node").count() == 4
        await page.locator("#step-review button.approve").wait_for(timeout=TIMEOUT_MS)
        assert (
            await page.locator("svg.dag g[data-step='review']").get_attribute("class")
            == "node status-awaiting"
        )
        await page.wait_for_function(
            "() => [...document.querySelectorAll('#step-illustrations img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length === 2",
            timeout=TIMEOUT_MS,
        )
        await page.screenshot(path=str(env.artifacts / "workflow-run-awaiting.png"), full_page=True)
        await page.fill("#edit-review", '{"note": "looks good"}')  # approve with an edit
        await page.click("#step-review button.approve")
        await page.locator("#run-status", has_text="DONE").wait_for(timeout=TIMEOUT_MS)
        await page.locator("#step-narration audio").first.wait_for(timeout=TIMEOUT_MS)
        assert await page.locator("#step-narration audio").count() == 2
        assert (
            await page.locator("svg.dag g[data-step='narration']").get_attribute("class")
            == "node status-done"
        )
        async with env.http(env.alice_key) as http:
            run = (await http.get(f"/v1/workflows/runs/{run_id}")).json()
        assert run["status"] == "DONE"
        assert next(s for s in run["steps"] if s["id"] == "review")["output"] == {"note": "looks good"}
        await env.finish(checked)
    finally:
        env.engine.settings.replies = []


async def test_a_gate_can_be_rejected_in_the_page(env: BrowserEnv) -> None:
    env.engine.settings.replies = [["illustrated story", orjson.dumps(STORY).decode()]]
    try:
        async with env.http(env.alice_key) as http:
            started = await http.post(
                "/v1/workflows/runs",
                json={"template": "illustrated-story", "inputs": {"topic": "a dog", "scenes": 2}},
            )
            assert started.status_code == 202, started.text
            run_id = started.json()["id"]
        context = await env.context("alice")
        checked = await env.open(context, f"/dashboard/workflows/runs/{run_id}", "workflow-rejected")
        page = checked.page
        await page.locator("#step-review button.reject").wait_for(timeout=TIMEOUT_MS)
        await page.fill("#reason-review", "too dark")
        await page.click("#step-review button.reject")
        await page.locator("#run-status", has_text="FAILED").wait_for(timeout=TIMEOUT_MS)
        await page.locator("#run-error", has_text="too dark").wait_for(timeout=TIMEOUT_MS)
        await env.finish(checked)
    finally:
        env.engine.settings.replies = []


async def test_a_job_is_canceled_and_retried_from_its_page(env: BrowserEnv) -> None:
    fault = env.engine.add_fault(
        Fault(latency_s=20.0, path="/v1/chat/completions", model="fake-chat", times=1)
    )
    try:
        async with env.http(env.alice_key) as http:
            queued = await http.post(
                "/v1/chat/completions",
                json={
                    "model": "fake-chat",
                    "messages": [{"role": "user", "content": "stop me"}],
                    "async": True,
                },
            )
            job_id = queued.json()["id"]
        # Cancel once the engine holds the request: a job canceled while still queued would
        # leave the slow fault for the retry (a loaded machine dispatches late).
        await eventually(
            lambda: fault not in env.engine.faults, TIMEOUT_MS / 1000, what="the engine taking the job"
        )
        context = await env.context("alice")
        checked = await env.open(context, f"/dashboard/jobs/{job_id}", "job-cancel")
        page = checked.page
        async with page.expect_navigation():  # the page reloads once the job has ended
            await page.click("#job-cancel")
        await page.locator("#job-status", has_text="CANCELED").wait_for(timeout=TIMEOUT_MS)
        async with page.expect_navigation():
            await page.click("#job-retry")
        await page.locator("#job-status", has_text="PROCESSED").wait_for(timeout=TIMEOUT_MS)
        await page.locator("pre.answer", has_text="stop me").wait_for(timeout=TIMEOUT_MS)
        await env.finish(checked)
    finally:
        if fault in env.engine.faults:
            env.engine.faults.remove(fault)


async def test_a_file_is_deleted_from_the_gallery(env: BrowserEnv) -> None:
    async with env.http(env.alice_key) as http:
        uploaded = await http.post("/v1/files", files={"file": ("doomed.wav", b"RIFF0000WAVE", "audio/wav")})
        file_id = uploaded.json()["id"]
        context = await env.context("alice")
        checked = await env.open(context, "/dashboard/files?kind=audio", "files-audio")
        page = checked.page
        card = page.locator(f"li.file[data-file='{file_id}']")
        assert await card.locator("audio").count() == 1
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await card.locator("button.delete").click()
        await card.wait_for(state="detached", timeout=TIMEOUT_MS)
        assert (await http.get(f"/v1/files/{file_id}")).status_code == 404
        await env.finish(checked)
