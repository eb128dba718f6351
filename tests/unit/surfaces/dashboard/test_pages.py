"""The dashboard's pages: each renders for a signed-in user and sends others to sign in; lists
page by cursor and filter; detail pages show only the user's own objects, media by signed link."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from inference_club.surfaces.dashboard.pages import PAGE_SIZE, _result_text
from tests.unit.surfaces.dashboard.conftest import PICTURE, Site

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAGES = [
    "/",
    "/dashboard",
    "/dashboard/settings/token",
    "/dashboard/machines",
    "/dashboard/models",
    "/dashboard/models?modality=image",
    "/dashboard/jobs",
    "/dashboard/batches",
    "/dashboard/files",
    "/dashboard/files?kind=audio",
    "/dashboard/playground",
]


def media_links(page: str) -> list[str]:
    return [html.unescape(src) for src in re.findall(r'src="(/v1/files/[^"]+)"', page)]


async def test_every_page_renders_for_a_signed_in_user_and_redirects_others(site: Site) -> None:
    user = await site.user("walker")
    me = site.signed_in(user)
    async with me.client, site.anonymous() as stranger:
        for path in PAGES:
            page = await me.client.get(path)
            assert page.status_code == 200, path
            assert user.username in page.text and me.csrf in page.text, path
            assert (await stranger.get(path)).status_code == 303, path


async def test_the_jobs_list_pages_and_filters_by_status(site: Site) -> None:
    user = await site.user()
    queued = [await site.job(user) for _ in range(PAGE_SIZE)]
    failed = await site.job(user, status="FAILED", error={"message": "boom"})
    other = await site.job(await site.user())
    me = site.signed_in(user)
    async with me.client:
        first = await me.client.get("/dashboard/jobs")
        shown = set(re.findall(r"/dashboard/jobs/(job_\w+)", first.text))
        assert len(shown) == PAGE_SIZE and other.id not in shown
        older = re.search(r'href="/dashboard/jobs\?after=(job_\w+)"', first.text)
        assert older is not None
        rest = await me.client.get("/dashboard/jobs", params={"after": older.group(1)})
        assert set(re.findall(r"/dashboard/jobs/(job_\w+)", rest.text)) | shown == {
            j.id for j in [*queued, failed]
        }
        assert "Older jobs" not in rest.text
        only_failed = await me.client.get("/dashboard/jobs", params={"status": "failed,bogus"})
        assert set(re.findall(r"/dashboard/jobs/(job_\w+)", only_failed.text)) == {failed.id}


async def test_a_job_page_shows_the_answer_and_its_media_by_signed_link(site: Site) -> None:
    user = await site.user()
    picture = await site.file(user)
    chat = await site.job(
        user,
        status="PROCESSED",
        result={"choices": [{"message": {"role": "assistant", "content": "Bonjour <b>"}}]},
    )
    drawn = await site.job(
        user,
        status="PROCESSED",
        endpoint="images.generations",
        result={"data": [{"url": "x"}]},
        files=[{"id": picture.id, "content_type": "image/png", "bytes": picture.bytes}],
    )
    theirs = await site.job(await site.user())
    me = site.signed_in(user)
    async with me.client:
        page = await me.client.get(f"/dashboard/jobs/{chat.id}")
        assert "Bonjour &lt;b&gt;" in page.text and "Bonjour <b>" not in page.text  # escaped
        media = await me.client.get(f"/dashboard/jobs/{drawn.id}")
        [link] = media_links(media.text)
        assert link.startswith(f"/v1/files/{picture.id}/content?exp=")
        async with site.anonymous() as stranger:
            assert (await stranger.get(link)).content == PICTURE
        assert (await me.client.get(f"/dashboard/jobs/{theirs.id}")).status_code == 404


async def test_files_filter_by_kind_and_another_users_file_is_not_found(site: Site) -> None:
    user = await site.user()
    image, sound = await site.file(user, "image/png"), await site.file(user, "audio/wav")
    theirs = await site.file(await site.user())
    me = site.signed_in(user)
    async with me.client:
        images = await me.client.get("/dashboard/files", params={"kind": "image"})
        assert image.id in images.text and sound.id not in images.text and theirs.id not in images.text
        everything = await me.client.get("/dashboard/files", params={"kind": "not-a-kind"})
        assert image.id in everything.text and sound.id in everything.text
        detail = await me.client.get(f"/dashboard/files/{sound.id}")
        assert detail.status_code == 200 and "<audio" in detail.text
        assert media_links(detail.text)[0].startswith(f"/v1/files/{sound.id}/content?exp=")
        assert (await me.client.get(f"/dashboard/files/{theirs.id}")).status_code == 404


async def test_a_batch_page_is_the_owners_only(site: Site) -> None:
    user, other = await site.user(), await site.user()
    batches = [await site.batch(user), await site.batch(other)]
    me = site.signed_in(user)
    async with me.client:
        listed = await me.client.get("/dashboard/batches")
        assert batches[0].id in listed.text and batches[1].id not in listed.text
        page = await me.client.get(f"/dashboard/batches/{batches[0].id}")
        assert page.status_code == 200 and f"label-{user.username}" in page.text
        assert (await me.client.get(f"/dashboard/batches/{batches[1].id}")).status_code == 404


async def test_the_admin_page_lists_users(site: Site) -> None:
    admin, someone = await site.user("root", admin=True), await site.user("someone")
    me = site.signed_in(admin)
    async with me.client:
        page = await me.client.get("/dashboard/admin")
    assert page.status_code == 200 and someone.username in page.text


@pytest.mark.parametrize(
    ("result", "text"),
    [
        ({"choices": [{"message": {"content": "chat"}}]}, "chat"),
        ({"choices": [{"text": "completion"}]}, "completion"),
        ({"text": "transcript"}, "transcript"),
        ({"choices": []}, None),
        ({"choices": [{"message": {"content": None}}]}, None),
        ({"data": [1, 2]}, None),
        ("plain", None),
        (None, None),
    ],
)
async def test_the_readable_part_of_an_answer(result: Any, text: str | None) -> None:
    assert _result_text(result) == text
