"""How the dashboard shows a file: which player, and a signed link that opens only that file
and only for an hour."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from inference_club.surfaces.dashboard.media import LINK_TTL_S, media_kind, signed_url
from tests.unit.surfaces.dashboard.conftest import PICTURE, Site

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("image/png", "image"),
        ("IMAGE/JPEG; q=1", "image"),
        ("image/webp", "image"),
        ("image/gif", "image"),
        ("image/svg+xml", "download"),  # may carry script: never shown inline
        ("audio/wav", "audio"),
        ("audio/mpeg", "audio"),
        ("video/mp4", "video"),
        ("model/gltf-binary", "download"),
        ("text/html", "download"),
        ("", "download"),
    ],
)
async def test_only_safe_types_get_a_player(content_type: str, kind: str) -> None:
    assert media_kind(content_type) == kind


async def test_a_link_opens_its_file_for_an_hour_and_nothing_else(site: Site) -> None:
    user = await site.user()
    picture, other = await site.file(user), await site.file(user, data=b"other bytes")
    before = int(time.time())
    link = signed_url(site.hub, picture.id)
    path, query = urlsplit(link).path, parse_qs(urlsplit(link).query)
    assert path == f"/v1/files/{picture.id}/content"
    assert before + LINK_TTL_S <= int(query["exp"][0]) <= int(time.time()) + LINK_TTL_S
    async with site.anonymous() as stranger:  # no session, no key: the signature is the permission
        opened = await stranger.get(link)
        assert opened.status_code == 200 and opened.content == PICTURE
        swapped = link.replace(picture.id, other.id)
        assert (await stranger.get(swapped)).status_code == 404
        expired = site.hub.files.signer.url(f"/v1/files/{picture.id}/content", picture.id, ttl_s=-1)
        assert (await stranger.get(expired)).status_code == 404
        assert (await stranger.get(f"/v1/files/{picture.id}/content")).status_code == 401
