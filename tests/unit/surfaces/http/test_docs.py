"""``/docs``: the explorer's own policy allows exactly its inline scripts, by hash."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from inference_club.surfaces.app import create_app
from inference_club.surfaces.http.docs import STATIC_PREFIX, page_csp
from inference_club.surfaces.http.security_headers import DEFAULT_CSP
from tests.conftest import make_settings


def sha256_source(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


def directive(policy: str, name: str) -> str:
    return next(d.strip() for d in policy.split(";") if d.strip().startswith(name + " "))


def test_each_inline_script_is_allowed_by_its_hash_and_nothing_else_inline() -> None:
    html = "<script>one()</script><p>x</p><script>\n  two();\n</script><script src='/x.js'></script>"
    script_src = directive(page_csp(html), "script-src")
    assert (
        script_src
        == f"script-src 'self' {sha256_source('one()')} {sha256_source(chr(10) + '  two();' + chr(10))}"
    )
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src


def test_the_policy_refuses_framing_plugins_and_foreign_hosts() -> None:
    policy = page_csp("<script>a()</script>")
    assert directive(policy, "default-src") == "default-src 'none'"
    assert directive(policy, "frame-ancestors") == "frame-ancestors 'none'"
    assert directive(policy, "connect-src") == "connect-src 'self'"
    assert "http" not in policy and "*" not in policy


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # /docs needs no hub: the app is not started.
    app = create_app(make_settings(tmp_path / "data"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def test_the_served_page_hashes_every_inline_script_it_carries(http: httpx.AsyncClient) -> None:
    answer = await http.get("/docs")
    assert answer.status_code == 200
    html = answer.text
    policy = answer.headers["content-security-policy"]
    assert policy != DEFAULT_CSP  # the page's own policy, not overwritten by the API default
    inline = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert inline, "the explorer starts from an inline script"
    script_src = directive(policy, "script-src").split()
    assert sorted(s for s in script_src if s.startswith("'sha256-")) == sorted(
        sha256_source(s) for s in inline
    )
    # Every other script tag loads from this origin; no inline event handlers, which no hash allows.
    for tag in re.findall(r"<script[^>]*>", html):
        assert tag == "<script>" or re.fullmatch(
            rf'<script src="{re.escape(STATIC_PREFIX)}/[\w.-]+">', tag
        ), tag
    assert not re.search(r"\son[a-z]+\s*=", html)


async def test_the_static_assets_are_served_from_the_package(http: httpx.AsyncClient) -> None:
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        answer = await http.get(f"{STATIC_PREFIX}/{name}")
        assert answer.status_code == 200 and answer.content, name
