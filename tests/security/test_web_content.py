"""Stored XSS on the hub's origin: user content never runs as a page of the hub.

Uploads and engine-declared media are served with nosniff, a sandboxing CSP and
``attachment`` for anything a browser would render as a document; every response carries
security headers; filenames are RFC 6266 / 5987 encoded; ``/docs`` still works in a real
browser under its own policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference_club.domain.web_content import content_disposition, served_content_type
from inference_club.testing.fake_state import Fault
from inference_club.testing.servers import serve_app
from tests.conftest import RunningHub, skip_or_fail
from tests.integration.conftest import engine_server, run_agent, services_for

XSS_HTML = b"<html><body><script>localStorage.setItem('pwned', '1')</script></body></html>"
XSS_SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>'
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _params(disposition: str) -> dict[str, str]:
    """A Content-Disposition's parameters, parsed the strict way (quoted strings honoured)."""
    kind, _, rest = disposition.partition(";")
    found = re.findall(r'\s*([A-Za-z*]+)=("(?:[^"\\]|\\.)*"|[^;]*)\s*(?:;|$)', rest)
    params = {"": kind.strip()}
    for name, value in found:
        assert name.lower() not in params, f"duplicate parameter {name} in {disposition!r}"
        params[name.lower()] = value
    return params


def _filename(disposition: str) -> str:
    star = _params(disposition)["filename*"]
    assert star.startswith("UTF-8''")
    return unquote(star[len("UTF-8''") :])


async def _upload(client: httpx.AsyncClient, name: str, data: bytes, content_type: str) -> dict[str, Any]:
    response = await client.post("/v1/files", files={"file": (name, data, content_type)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _assert_user_content(response: httpx.Response, *, inline: bool) -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    csp = headers["content-security-policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp
    assert "script-src" not in csp
    disposition = headers["content-disposition"]
    assert _params(disposition)[""] == ("inline" if inline else "attachment"), disposition


# --------------------------------------------------------------------------- pure rules


@pytest.mark.parametrize(
    "name",
    [
        'evil".html',
        "x\"; filename*=UTF-8''pwned.html; a=\"b",
        "line\r\nSet-Cookie: a=b.txt",
        "semi;colon; name=x.txt",
        'back\\slash".txt',
        "percent%22quote.txt",
    ],
)
def test_a_hostile_name_cannot_add_header_parameters(name: str) -> None:
    disposition = content_disposition(name, inline=False)
    assert "\r" not in disposition and "\n" not in disposition
    params = _params(disposition)
    assert set(params) == {"", "filename", "filename*"}
    fallback = params["filename"]
    assert fallback.startswith('"') and fallback.endswith('"') and '"' not in fallback[1:-1]
    assert "\\" not in fallback and ";" not in fallback and "%" not in fallback


def test_unicode_names_round_trip_with_an_ascii_fallback() -> None:
    disposition = content_disposition("отчёт résumé 报告.pdf", inline=False)
    disposition.encode("latin-1")  # a header value the server can send
    assert _filename(disposition) == "отчёт résumé 报告.pdf"
    fallback = _params(disposition)["filename"]
    assert fallback.isascii() and fallback.endswith('.pdf"') and "resume" in fallback


@pytest.mark.parametrize(
    ("declared", "served"),
    [
        ("text/html", "application/octet-stream"),
        ("text/html; charset=utf-8", "application/octet-stream"),
        ("image/svg+xml", "application/octet-stream"),
        ("application/xhtml+xml", "application/octet-stream"),
        ("text/xml", "application/octet-stream"),
        ("application/javascript", "application/octet-stream"),
        ("text/css", "application/octet-stream"),
        ("application/pdf", "application/pdf"),
        ("image/png", "image/png"),
        ("audio/wav", "audio/wav"),
        ("video/mp4", "video/mp4"),
        ("text/plain", "text/plain; charset=utf-8"),
        ("model/gltf-binary", "model/gltf-binary"),
        ("no-slash", "application/octet-stream"),
        ("image/png\r\nx-evil: 1", "application/octet-stream"),
    ],
)
def test_served_content_types(declared: str, served: str) -> None:
    assert served_content_type(declared) == served


# --------------------------------------------------------------------------- uploads


async def test_uploaded_documents_are_downloads_and_media_stay_inline(hub: RunningHub) -> None:
    key = await hub.new_user("mallory")
    headers = {"Authorization": f"Bearer {key}"}
    cases = [
        ("page.html", XSS_HTML, "text/html", False),
        ("logo.svg", XSS_SVG, "image/svg+xml", False),
        ("feed.xml", b"<?xml version='1.0'?><x/>", "application/xml", False),
        ("app.js", b"alert(1)", "application/javascript", False),
        ("doc.pdf", b"%PDF-1.4", "application/pdf", False),
        ("blob.weird", b"??", "application/x-unheard-of", False),
        ("pic.png", PNG, "image/png", True),
        ("notes.txt", b"hello", "text/plain", True),
    ]
    async with httpx.AsyncClient(base_url=hub.base_url, headers=headers, timeout=10) as client:
        for name, data, content_type, inline in cases:
            record = await _upload(client, name, data, content_type)
            assert record["content_type"] == content_type  # the metadata keeps the declared type
            owner = await client.get(f"/v1/files/{record['id']}/content")
            assert owner.status_code == 200 and owner.content == data
            _assert_user_content(owner, inline=inline)
            assert not owner.headers["content-type"].startswith(
                ("text/html", "image/svg", "application/xml", "application/javascript")
            )
            assert _filename(owner.headers["content-disposition"]) == name
            # A share link needs no key: the very URL a victim would be sent.
            share = (await client.post(f"/v1/files/{record['id']}/share")).json()["url"]
            async with httpx.AsyncClient(timeout=10) as anonymous:
                shared = await anonymous.get(share)
            assert shared.status_code == 200 and shared.content == data
            _assert_user_content(shared, inline=inline)


async def test_hostile_and_unicode_filenames_download(hub: RunningHub) -> None:
    key = await hub.new_user("mallory")
    async with httpx.AsyncClient(
        base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        for name in ("报告 résumé.pdf", "../../etc/passwd", 'a"; filename="pwned.html'):
            record = await _upload(client, name, b"data", "application/pdf")
            response = await client.get(f"/v1/files/{record['id']}/content")
            assert response.status_code == 200, (name, response.text)
            params = _params(response.headers["content-disposition"])
            assert set(params) == {"", "filename", "filename*"}, params
            stored = record["filename"]
            assert "/" not in stored and _filename(response.headers["content-disposition"]) == stored
            if name.startswith("报告"):
                assert stored == name
            if name.startswith("../"):
                assert stored == "passwd"
        # A raw multipart part whose quoted filename carries a quote and CR/LF-free injection.
        boundary = "b0undary"
        body = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="x\\"; evil=1.html"\r\n'
            "Content-Type: text/html\r\n\r\n"
            "<script>1</script>\r\n"
            f"--{boundary}--\r\n"
        ).encode()
        raw = await client.post(
            "/v1/files", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        assert raw.status_code == 200, raw.text
        served = await client.get(f"/v1/files/{raw.json()['id']}/content")
        assert set(_params(served.headers["content-disposition"])) == {"", "filename", "filename*"}
        _assert_user_content(served, inline=False)


# --------------------------------------------------------------------------- engine-declared HTML


def _html_engine() -> Starlette:
    """An engine that answers speech with an HTML page carrying a script."""

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "evil-tts", "object": "model"}]})

    async def speech(_: Request) -> Response:
        return Response(XSS_HTML, media_type="text/html")

    return Starlette(
        routes=[Route("/v1/models", models), Route("/v1/audio/speech", speech, methods=["POST"])]
    )


async def test_engine_declared_html_is_never_served_as_html(hub: RunningHub) -> None:
    key = await hub.new_user("engine-owner")
    async with AsyncExitStack() as stack:
        engine_url = await stack.enter_async_context(serve_app(_html_engine(), shutdown_timeout_s=0.5))
        services = [
            {"type": "tts", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "evil-tts"}]}
        ]
        await stack.enter_async_context(run_agent(hub.base_url, key, "evil-rig", services))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as client:
            answer = await client.post(
                "/v1/audio/speech", json={"model": "evil-tts", "input": "hi", "voice": "a"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.content == XSS_HTML
            assert answer.headers["content-type"] == "application/octet-stream"
            _assert_user_content(answer, inline=False)
            stored = await client.get(answer.headers["x-file-url"])
            assert stored.status_code == 200 and stored.content == XSS_HTML
            assert stored.headers["content-type"] == "application/octet-stream"
            _assert_user_content(stored, inline=False)


# --------------------------------------------------------------------------- every response


async def test_every_response_carries_security_headers(hub: RunningHub) -> None:
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as client:
        for response in (
            await client.get("/healthz"),
            await client.get("/v1/models"),
            await client.get("/no/such/path"),
            await client.get("/openapi.json"),
            await client.post("/v1/chat/completions", content=b"{", headers={"authorization": "x"}),
        ):
            headers = response.headers
            assert headers["x-content-type-options"] == "nosniff", response.url
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "no-referrer"
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert "strict-transport-security" not in headers  # plain HTTP
        behind_proxy = await client.get("/healthz", headers={"x-forwarded-proto": "https"})
        assert behind_proxy.headers["strict-transport-security"].startswith("max-age=")


async def test_security_headers_do_not_buffer_streams(hub: RunningHub) -> None:
    """An SSE stream whose engine stalls after its first chunk still delivers that chunk."""
    key = await hub.new_user("streamer")
    async with AsyncExitStack() as stack:
        state, url = await stack.enter_async_context(engine_server())
        state.add_fault(Fault(stall_after=1, path="/v1/chat/completions"))
        await stack.enter_async_context(run_agent(hub.base_url, key, "rig", services_for(url, types=["llm"])))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            body = {
                "model": "fake-chat",
                "stream": True,
                "messages": [{"role": "user", "content": "one two three"}],
            }
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                assert response.headers["x-content-type-options"] == "nosniff"

                async def first_event() -> str:
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            return line
                    return ""

                async with asyncio.timeout(5):
                    assert (await first_event()).startswith("data:")


# --------------------------------------------------------------------------- /docs in a real browser


async def test_docs_page_policy_allows_its_own_script_only(hub: RunningHub) -> None:
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as client:
        page = await client.get("/docs")
    csp = page.headers["content-security-policy"]
    assert "'sha256-" in csp and "'unsafe-eval'" not in csp
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "http" not in script_src
    assert "frame-ancestors 'none'" in csp


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        skip_or_fail("chromium is not installed")
    assert found is not None
    return found


async def _dump_dom(url: str, timeout_s: float = 60.0) -> str:
    """The DOM after the page's scripts ran, from a headless Chromium in its own process group."""
    process = await asyncio.create_subprocess_exec(
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, _ = await process.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return stdout.decode(errors="replace")


@pytest.mark.slow
async def test_docs_still_renders_in_chromium(hub: RunningHub) -> None:
    """Swagger UI runs under the page's CSP: the rendered DOM lists the API's operations."""
    dom = await _dump_dom(f"{hub.base_url}/docs")
    assert "swagger-ui" in dom
    assert "/v1/chat/completions" in dom, dom[-2000:]  # fetched /openapi.json and rendered it


PAGE_SCRIPT = (
    b'<html><body><script>document.body.innerHTML = "PWN" + "ED-" + document.domain</script></body></html>'
)
SVG_SCRIPT = (
    b'<svg xmlns="http://www.w3.org/2000/svg"><script>'
    b'document.documentElement.setAttribute("data-x", "PWN" + "ED")</script></svg>'
)


@pytest.mark.slow
async def test_the_user_content_policy_stops_scripts_in_chromium(hub: RunningHub) -> None:
    """Even rendered as a page, stored HTML or SVG runs no script under the hub's headers.

    A browser downloads these files (``attachment``), so to see the second line of defence
    a small proxy serves the share link's bytes with every security header the hub sent,
    minus Content-Disposition and with the original type: what a browser that ignored
    ``attachment`` would render. The same page without the headers is the control.
    """
    key = await hub.new_user("mallory")
    async with httpx.AsyncClient(
        base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        links: dict[str, tuple[str, str]] = {}
        for name, data, content_type in (
            ("x.html", PAGE_SCRIPT, "text/html"),
            ("x.svg", SVG_SCRIPT, "image/svg+xml"),
        ):
            record = await _upload(client, name, data, content_type)
            links[name] = ((await client.post(f"/v1/files/{record['id']}/share")).json()["url"], content_type)

    async def rendered(request: Request) -> Response:
        url, content_type = links[request.path_params["name"]]
        async with httpx.AsyncClient(timeout=10) as fetcher:
            hub_answer = await fetcher.get(url)
        kept = {
            k: v
            for k, v in hub_answer.headers.items()
            if k in ("content-security-policy", "x-content-type-options", "x-frame-options")
        }
        if request.query_params.get("naive"):
            kept = {}
        return Response(hub_answer.content, media_type=content_type, headers=kept)

    app = Starlette(routes=[Route("/{name}", rendered)])
    async with serve_app(app, shutdown_timeout_s=0.5) as proxy:
        naive, html, svg = await asyncio.gather(
            _dump_dom(f"{proxy}/x.html?naive=1"), _dump_dom(f"{proxy}/x.html"), _dump_dom(f"{proxy}/x.svg")
        )
    assert "PWNED" in naive, naive  # the harness sees a script that runs
    assert "PWNED" not in html and '"PWN" + "ED-"' in html, html  # the page loaded, its script did not run
    assert "PWNED" not in svg and "<svg" in svg, svg
