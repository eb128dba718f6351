"""The error tree (docs/errors.md) and its rendering in one place."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Query

from inference_club import errors
from inference_club.errors import (
    ALL_ERRORS,
    AuthError,
    Busy,
    Conflict,
    HubError,
    InvalidRequest,
    InvalidSpec,
    MalformedBody,
    NoProvider,
    NotFound,
    RateLimited,
    RequestTooLarge,
    TooManyItems,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
)
from inference_club.surfaces.http import error_handlers

# The documented error types (type → HTTP): inference, authentication, the too_large
# batch type and the services_unavailable type of workflow runs.
DOCUMENTED_TYPES: dict[str, set[int]] = {
    "no_provider": {404},
    "upstream_error": {502, 504},
    "invalid_request": {400},
    "request_too_large": {413},
    "unsupported_media_type": {415},
    "rate_limited": {429},
    "busy": {503},
    "not_found": {404},
    "conflict": {409},
    "invalid_spec": {400},
    "invalid_script": {400},  # the dialogue rules of /v1/voice/generations
    "too_large": {400},
    "invalid_api_key": {401},
    "services_unavailable": {409},
}


def test_every_spec_type_has_a_class_with_its_status() -> None:
    seen: dict[str, set[int]] = {}
    for cls in ALL_ERRORS:
        seen.setdefault(cls.type, set()).add(cls.status)
    assert seen == DOCUMENTED_TYPES


def test_tree_shape() -> None:
    for cls in ALL_ERRORS:
        assert issubclass(cls, HubError)
        assert cls.__doc__, f"{cls.__name__} has no docstring"
    assert issubclass(InvalidSpec, InvalidRequest)
    assert issubclass(TooManyItems, InvalidRequest)
    assert issubclass(UpstreamTimeout, UpstreamError)
    assert issubclass(UpstreamStatus, UpstreamError)
    assert HubError.status == 500 and HubError.type == "server_error"


def test_all_errors_lists_every_class_of_the_module() -> None:
    defined = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, HubError) and obj is not HubError
    }
    # UpstreamStatus carries whatever status and body the engine answered.
    assert defined - {UpstreamStatus} == set(ALL_ERRORS)


def test_module_docstring_draws_every_class() -> None:
    assert errors.__doc__
    for cls in (*ALL_ERRORS, HubError, UpstreamStatus):
        assert cls.__name__ in errors.__doc__


def test_envelope_body() -> None:
    error = InvalidRequest("'messages' must be a non-empty array.", param="messages")
    assert error.status_code == 400
    assert error.body() == {
        "error": {
            "message": "'messages' must be a non-empty array.",
            "type": "invalid_request",
            "param": "messages",
            "code": None,
        }
    }
    assert NotFound("gone", code="x").body()["error"] == {
        "message": "gone",
        "type": "not_found",
        "param": None,
        "code": "x",
    }


def test_detail_shapes_carry_the_envelope_too() -> None:
    assert AuthError().body() == {
        "detail": "Invalid or missing API key.",
        "error": {
            "message": "Invalid or missing API key.",
            "type": "invalid_api_key",
            "param": None,
            "code": "invalid_api_key",
        },
    }
    assert AuthError().headers == {"WWW-Authenticate": "Bearer"}
    malformed = MalformedBody("Request body is not valid JSON").body()
    assert malformed["detail"] == malformed["error"]["message"] == "Request body is not valid JSON"
    assert malformed["error"]["type"] == "invalid_request"
    assert MalformedBody("x").status_code == 400


def test_upstream_status_passes_through() -> None:
    body = {
        "error": {
            "message": "bad temperature",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    }
    error = UpstreamStatus(422, body, "bad temperature")
    assert error.status_code == 422
    assert error.body() is body
    assert UpstreamTimeout("slow").status_code == 504


ERROR_SAMPLES: dict[str, HubError] = {
    "auth": AuthError(),
    "malformed": MalformedBody("Request body is not valid JSON: line 1"),
    "invalid": InvalidRequest("'model' must be a string.", param="model"),
    "spec": InvalidSpec("cycle: a -> b -> a", param="spec.steps"),
    "too_many": TooManyItems("at most 256 requests", param="requests"),
    "too_large": RequestTooLarge("over 16 bytes"),
    "media": UnsupportedMediaType("no", param="file"),
    "not_found": NotFound("No file with id 'file_x'.", param="file_id"),
    "no_provider": NoProvider("nobody serves m", param="model"),
    "conflict": Conflict("not FAILED"),
    "rate": RateLimited("slow down", headers={"Retry-After": "7"}),
    "busy": Busy("all full", headers={"Retry-After": "30"}),
    "upstream": UpstreamError("engine failed"),
    "timeout": UpstreamTimeout("engine slow"),
    "status": UpstreamStatus(
        418, {"error": {"message": "teapot", "type": "x", "param": None, "code": None}}, "t"
    ),
}


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    error_handlers.install(app)

    @app.get("/raise/{name}")
    async def raise_error(name: str) -> dict[str, Any]:
        raise ERROR_SAMPLES[name]

    @app.get("/crash")
    async def crash() -> dict[str, Any]:
        raise RuntimeError("secret internals")

    @app.get("/typed")
    async def typed(limit: int = Query(10, ge=1)) -> dict[str, Any]:
        return {"limit": limit}

    return app


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


@pytest.mark.parametrize("name", sorted(ERROR_SAMPLES))
async def test_rendered_in_one_place(app: FastAPI, name: str) -> None:
    error = ERROR_SAMPLES[name]
    response = await _get(app, f"/raise/{name}")
    assert response.status_code == error.status_code
    assert response.json() == error.body()
    for header, value in error.headers.items():
        assert response.headers[header] == value
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    if error.shape == "detail":
        assert set(response.json()) == {"detail", "error"}


async def test_unexpected_exception_is_a_generic_500_envelope(app: FastAPI) -> None:
    response = await _get(app, "/crash")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"message": "Internal error.", "type": "server_error", "param": None, "code": None}
    }
    assert "secret internals" not in response.text


async def test_validation_errors_become_invalid_request_naming_param(app: FastAPI) -> None:
    response = await _get(app, "/typed?limit=abc")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["param"] == "limit"
    assert "limit" in error["message"]
    assert (await _get(app, "/typed?limit=0")).json()["error"]["param"] == "limit"
    assert (await _get(app, "/typed?limit=5")).json() == {"limit": 5}


async def test_unknown_path_and_method_answer_detail_and_envelope(app: FastAPI) -> None:
    response = await _get(app, "/nope")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "Not Found",
        "error": {"message": "Not Found", "type": "not_found", "param": None, "code": None},
    }
