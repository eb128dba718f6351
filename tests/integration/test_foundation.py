"""HTTP basics on a real socket: auth, errors, request ids, slashes, health, OpenAPI, /docs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from inference_club.domain.endpoints import ENDPOINTS
from tests.conftest import RunningHub, make_settings, running_hub

CHAT = "/v1/chat/completions"


@pytest.fixture
async def client(hub: RunningHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as client:
        yield client


@pytest.fixture
async def key(hub: RunningHub) -> str:
    return await hub.new_user("alice")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer ic_not_a_real_key"},
        {"Authorization": "Basic YWxpY2U6cGFzcw=="},
    ],
    ids=["missing", "empty", "no-token", "unknown", "basic"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", CHAT),
        ("GET", "/v1/files"),
        ("POST", "/api/inference/agent/heartbeat/"),
    ],
)
async def test_401_detail_without_a_valid_key(
    client: httpx.AsyncClient, key: str, headers: dict[str, str], method: str, path: str
) -> None:
    response = await client.request(method, path, headers=headers, json={"model": "m", "messages": []})
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"detail", "error"} and isinstance(body["detail"], str) and body["detail"]
    assert body["error"]["message"] == body["detail"] and body["error"]["type"] == "invalid_api_key"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-request-id"]


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines if line)
    await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers


async def test_a_refusal_waits_for_the_body_so_the_connection_stays_usable(hub: RunningHub) -> None:
    """A 401 decided from the head alone: answered once the body is in, on a connection that
    stays open for the next request. Behind a proxy that streams bodies (nginx), an answer
    before the body made the proxy drop the client's kept-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(hub.base_url.rsplit(":", 1)[1]))
    body = b'{"model": "m", "input": "x"}'
    writer.write(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer ic_not_a_real_key\r\n"
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    await writer.drain()
    with pytest.raises(TimeoutError):  # nothing is answered while the body is missing
        async with asyncio.timeout(0.3):
            await reader.read(1)
    writer.write(body)
    status, headers = await read_answer(reader)
    assert status == 401 and headers.get("connection") != "close"
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")  # the same connection, reused
    assert (await read_answer(reader))[0] == 200
    writer.close()


async def test_a_refused_upload_too_big_to_wait_for_closes_its_connection(hub: RunningHub) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(hub.base_url.rsplit(":", 1)[1]))
    writer.write(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: hub\r\n"
        + b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 50000000\r\n\r\n"
    )
    await writer.drain()
    status, headers = await read_answer(reader)  # at once: no 50 MB are read for a 401
    assert status == 401 and headers["connection"] == "close"
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # and the hub closed it
    writer.close()


async def test_models_with_a_key_is_an_empty_list(client: httpx.AsyncClient, key: str) -> None:
    response = await client.get("/v1/models", headers=_auth(key))
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": []}


async def test_keys_of_several_users_work(hub: RunningHub, client: httpx.AsyncClient) -> None:
    first = await hub.new_user("carol")
    second = await hub.new_user("dave")
    for key in (first, second):
        assert (await client.get("/v1/models", headers=_auth(key))).status_code == 200


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{bad json", "not valid JSON"),
        (b'{"model": "m",', "not valid JSON"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
async def test_malformed_json_is_400_detail_naming_the_problem(
    client: httpx.AsyncClient, key: str, raw: bytes, needle: str
) -> None:
    response = await client.post(
        CHAT, content=raw, headers={**_auth(key), "content-type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail", "error"}
    assert needle in body["detail"] and body["error"]["message"] == body["detail"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"model": 3, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        (CHAT, {"messages": [{"role": "user", "content": "hi"}]}, "model"),
        (CHAT, {"model": "m", "messages": "hi"}, "messages"),
        (CHAT, {"model": "m"}, "messages"),
        ("/v1/embeddings", {"model": "m", "input": 42}, "input"),
        ("/v1/completions", {"model": ["m"], "prompt": "x"}, "model"),
    ],
)
async def test_wrong_types_are_400_envelopes_naming_param(
    client: httpx.AsyncClient, key: str, path: str, body: dict[str, object], param: str
) -> None:
    response = await client.post(path, json=body, headers=_auth(key))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["param"] == param
    assert error["message"]
    assert set(error) == {"message", "type", "param", "code"}


async def test_wrong_query_type_is_400_envelope(client: httpx.AsyncClient, key: str) -> None:
    response = await client.get("/v1/files?limit=many", headers=_auth(key))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "limit"


async def test_unknown_model_is_404_no_provider(client: httpx.AsyncClient, key: str) -> None:
    response = await client.post(
        CHAT, json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, headers=_auth(key)
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "no_provider"


JUNK_BODIES: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"null", "application/json"),
    (b'{"model": null, "messages": null, "input": null, "prompt": null, "file": null}', "application/json"),
    (b'{"model": "m", "stream": "yes", "async": "maybe", "n": -1, "messages": [null]}', "application/json"),
    (b'{"model": "\\u0000", "messages": [[[[[]]]]], "input": {"a": 1}, "prompt": 1e999}', "application/json"),
    (
        b'{"model": "m", "input": "x", "prompt": "x", "messages": [{"role": "user", "content": "x"}], '
        b'"async": true}',
        "application/json",
    ),
    (
        b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--xyz--\r\n',
        "multipart/form-data; boundary=xyz",
    ),
    (b"garbage without boundary", "multipart/form-data"),
    (b"model=m", "application/x-www-form-urlencoded"),
    (b"\x00\x01\x02", "application/octet-stream"),
]


async def test_no_500_for_bad_input_on_any_endpoint(client: httpx.AsyncClient, key: str) -> None:
    paths = [e.path for e in ENDPOINTS] + [
        "/v1/files",
        "/v1/files/file_x/share",
        "/api/inference/agent/heartbeat",
    ]
    failures = []
    for path in paths:
        for raw, content_type in JUNK_BODIES:
            response = await client.post(
                path, content=raw, headers={**_auth(key), "content-type": content_type}
            )
            if not 400 <= response.status_code < 500:
                failures.append((path, raw[:40], response.status_code, response.text[:200]))
    for path in (
        "/v1/files/%00",
        "/v1/files/" + "x" * 5000,
        "/v1/audio/voices",
        "/v1/audio/voices?model=",
        "/v1/files?limit=-1&after=%ff",
    ):
        response = await client.get(path, headers=_auth(key))
        if not 400 <= response.status_code < 500:
            failures.append((path, b"GET", response.status_code, response.text[:200]))
    assert not failures


async def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    async with running_hub(make_settings(tmp_path / "data", max_body_bytes=1000)) as hub:
        key = await hub.new_user("alice")
        body = {"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]}
        async with httpx.AsyncClient(base_url=hub.base_url) as client:
            response = await client.post(CHAT, json=body, headers=_auth(key))
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


# --------------------------------------------------------------------------- headers and routes


async def test_every_response_has_a_request_id(client: httpx.AsyncClient, key: str) -> None:
    responses = [
        await client.get("/v1/models", headers=_auth(key)),
        await client.get("/v1/models"),
        await client.post(CHAT, content=b"{", headers=_auth(key)),
        await client.get("/nowhere"),
        await client.delete("/v1/models", headers=_auth(key)),
        await client.get("/healthz"),
        await client.get("/readyz"),
        await client.get("/openapi.json"),
        await client.get("/docs"),
        await client.get("/docs-static/swagger-ui.css"),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


async def test_a_sane_client_request_id_is_kept(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz", headers={"x-request-id": "trace-42"})).headers[
        "x-request-id"
    ] == "trace-42"
    odd = (await client.get("/healthz", headers={"x-request-id": "bad id <script>"})).headers["x-request-id"]
    assert odd != "bad id <script>" and re.fullmatch(r"[A-Za-z0-9._:-]+", odd)


async def test_routes_answer_with_and_without_trailing_slash(client: httpx.AsyncClient, key: str) -> None:
    for path in ("/v1/models", "/healthz", "/readyz", "/v1/files"):
        plain = await client.get(path, headers=_auth(key))
        slashed = await client.get(path + "/", headers=_auth(key))
        assert plain.status_code == slashed.status_code == 200, path
        assert plain.json() == slashed.json()
    # POST with a slash reaches the same handler (a 400 about the body, not a 404 or redirect).
    response = await client.post(CHAT + "/", content=b"{", headers=_auth(key))
    assert response.status_code == 400 and "detail" in response.json()


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok"}


# --------------------------------------------------------------------------- OpenAPI and /docs


async def test_openapi_lists_every_v1_path(hub: RunningHub, client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = set(spec["paths"])
    expected = {e.path for e in ENDPOINTS} | {
        "/v1/models",
        "/v1/audio/voices",
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/files/{file_id}/content",
        "/v1/files/{file_id}/share",
        "/healthz",
        "/readyz",
        "/api/inference/agent/heartbeat",
    }
    assert expected <= paths
    # Every route of the app (inside included routers too) is checked against the document in
    # tests/unit/surfaces/http/test_openapi_doc.py.
    # Authorize works: a bearer scheme, used by the /v1 operations.
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    assert spec["paths"]["/v1/models"]["get"]["security"]
    chat = spec["paths"][CHAT]["post"]
    assert "application/json" in chat["requestBody"]["content"]


async def test_docs_is_served_from_the_package_only(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "SwaggerUIBundle" in html
    assert not re.search(r"https?://", html), "the explorer page must not reference another host"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, "no assets found"
    for asset in assets:
        assert asset.startswith("/docs-static/"), asset
        loaded = await client.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 100
    assert "/openapi.json" in html
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    js = await client.get("/docs-static/swagger-ui-bundle.js")
    assert "javascript" in js.headers["content-type"]
    # FastAPI emits OpenAPI 3.1, which only Swagger UI 5 and later can render.
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
    assert "OAS31" in js.text, "the bundled Swagger UI cannot render OpenAPI 3.1"
    css = await client.get("/docs-static/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
