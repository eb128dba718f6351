"""Starlette's own answers, validation failures and disconnects in the one error shape.

The rendering of each ``HubError`` type is tested with the error tree (tests/unit/test_errors.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from inference_club.surfaces.http import error_handlers
from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

ENVELOPE_KEYS = {"message", "type", "param", "code"}


class Inner(BaseModel):
    size: int


class Outer(BaseModel):
    inner: Inner


def bare_app() -> FastAPI:
    """Handlers installed on an app without a hub (nothing to authenticate with)."""
    app = FastAPI()
    error_handlers.install(app)

    @app.post("/nested")
    async def nested(body: Outer) -> dict[str, Any]:
        return body.model_dump()

    @app.get("/gone")
    async def gone() -> dict[str, Any]:
        raise ClientDisconnect()

    @app.get("/teapot")
    async def teapot() -> dict[str, Any]:
        raise HTTPException(418, detail={"why": "short and stout"}, headers={"x-pot": "1"})

    return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bare() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=bare_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_a_nested_body_field_is_named_with_dots(bare: httpx.AsyncClient) -> None:
    answer = await bare.post("/nested", json={"inner": {"size": "big"}})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "inner.size" and error["message"].startswith("inner.size: ")
    assert set(error) == ENVELOPE_KEYS


async def test_a_missing_body_is_named_body(bare: httpx.AsyncClient) -> None:
    answer = await bare.post("/nested")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "body"


async def test_a_client_gone_mid_request_is_a_quiet_499(bare: httpx.AsyncClient) -> None:
    answer = await bare.get("/gone")
    assert answer.status_code == 499 and answer.content == b""


async def test_an_http_exception_keeps_its_status_and_headers_with_its_detail_as_message(
    bare: httpx.AsyncClient,
) -> None:
    answer = await bare.get("/teapot")
    assert answer.status_code == 418 and answer.headers["x-pot"] == "1"
    body = answer.json()
    assert body["detail"] == {"why": "short and stout"}
    assert body["error"] == {
        "message": str({"why": "short and stout"}),
        "type": "invalid_request",
        "param": None,
        "code": None,
    }


async def test_without_a_hub_an_unknown_v1_path_is_a_plain_404(bare: httpx.AsyncClient) -> None:
    answer = await bare.get("/v1/nothing")
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize("path", ["/v1", "/v1/", "/v1/nothing/here"])
async def test_under_v1_the_key_is_checked_before_saying_a_path_does_not_exist(
    api: InProcessHub, path: str
) -> None:
    refused = await api.http.get(path)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "invalid_api_key"
    key = await api.new_key()
    unknown = await api.http.get(path, headers=auth(key))
    assert unknown.status_code == 404
    assert unknown.json() == {
        "detail": "Not Found",
        "error": {"message": "Not Found", "type": "not_found", "param": None, "code": None},
    }


async def test_outside_v1_an_unknown_path_needs_no_key(api: InProcessHub) -> None:
    answer = await api.http.get("/v1x/models")
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"


async def test_a_wrong_method_is_405_invalid_request_with_allow(api: InProcessHub) -> None:
    key = await api.new_key()
    answer = await api.http.put("/v1/models", headers=auth(key))
    assert answer.status_code == 405
    assert answer.json()["error"]["type"] == "invalid_request" and answer.json()["detail"]
    assert "GET" in answer.headers["allow"]
