"""Generated-media URLs are signed, expiring links that work without an API key."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.parametrize("stack", ["tunnel"], indirect=True)


async def test_image_url_works_in_an_img_tag_without_a_key(stack: Stack) -> None:
    answer = await stack.client().images.generate(model="fake-image", prompt="a red fox")
    assert answer.data
    url = answer.data[0].url or ""
    query = parse_qs(urlsplit(url).query)
    assert set(query) == {"exp", "sig"}
    async with httpx.AsyncClient(timeout=10) as browser:  # no Authorization header, like an <img>
        image = await browser.get(url)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        tampered = url.replace("sig=", "sig=f")
        assert (await browser.get(tampered)).status_code == 404
        bare = url.split("?")[0]
        assert (await browser.get(bare)).status_code == 401


async def test_media_bytes_and_mesh_urls_are_signed(stack: Stack) -> None:
    async with stack.http() as http, httpx.AsyncClient(timeout=10) as browser:
        music = await http.post("/v1/music/generations", json={"model": "fake-music", "prompt": "lofi"})
        assert music.status_code == 200
        audio = await browser.get(music.headers["x-file-url"])
        assert audio.status_code == 200 and audio.content == music.content
        mesh = await http.post("/v1/3d/generations", json={"model": "fake-mesh", "prompt": "a chair"})
        glb = await browser.get(mesh.json()["data"][0]["url"])
        assert glb.status_code == 200 and glb.content[:4] == b"glTF"


async def test_file_listing_stays_owner_only(stack: Stack) -> None:
    await stack.client().images.generate(model="fake-image", prompt="a red fox")
    other = await stack.hub.new_user("mallory")
    async with (
        stack.http() as http,
        stack.http(other) as stranger,
        httpx.AsyncClient(base_url=stack.hub.base_url, timeout=10) as anonymous,
    ):
        mine = (await http.get("/v1/files")).json()["data"]
        assert len(mine) == 1 and "sig=" not in mine[0]["url"]
        assert (await anonymous.get("/v1/files")).status_code == 401
        assert (await stranger.get("/v1/files")).json()["data"] == []
        assert (await stranger.get(mine[0]["url"])).status_code == 404
