"""Reading request bodies: JSON and multipart, size caps, and the endpoint's own checks, as 4xx naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from inference_club.domain.endpoints import BY_NAME
from inference_club.services.bodies import MultipartBody
from inference_club.surfaces.http import error_handlers
from inference_club.surfaces.http.middleware import BodyLimitMiddleware
from inference_club.surfaces.http.reading import read_inference_body, read_json, read_multipart

JSON_LIMIT = 256
UPLOAD_LIMIT = 4096


def reading_app() -> FastAPI:
    app = FastAPI()
    error_handlers.install(app)

    @app.post("/json")
    async def json_route(request: Request) -> dict[str, Any]:
        return (await read_json(request)).data

    @app.post("/form")
    async def form_route(request: Request) -> dict[str, Any]:
        form = await read_multipart(request, max_files=1, max_fields=2)
        try:
            return {
                "fields": form.fields,
                "files": [(p.field, p.filename, p.content_type, p.size) for p in form.files],
            }
        finally:
            form.close()

    @app.post("/infer/{name}")
    async def infer_route(name: str, request: Request) -> dict[str, Any]:
        body, model = await read_inference_body(request, BY_NAME[name], default_model=lambda: "picked-by-hub")
        try:
            return {
                "model": model,
                "multipart": isinstance(body, MultipartBody),
                "stream": body.get("stream"),
            }
        finally:
            if isinstance(body, MultipartBody):
                body.close()

    app.add_middleware(BodyLimitMiddleware, json_limit=JSON_LIMIT, upload_limit=UPLOAD_LIMIT)
    return app


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=reading_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"", "empty"),
        (b" \n\t", "empty"),
        (b'{"model": "m",', "not valid JSON"),
        (b"{'model': 'm'}", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b"42", "must be a JSON object"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400_with_detail(
    http: httpx.AsyncClient, raw: bytes, needle: str
) -> None:
    answer = await http.post("/json", content=raw, headers=JSON)
    error = error_of(answer, 400)
    assert needle in error["message"] and answer.json()["detail"] == error["message"]


async def test_a_json_object_comes_back_parsed(http: httpx.AsyncClient) -> None:
    answer = await http.post("/json", json={"model": "m", "n": [1, 2]})
    assert answer.status_code == 200 and answer.json() == {"model": "m", "n": [1, 2]}


async def test_a_declared_length_over_the_json_cap_is_413_naming_both_sizes(http: httpx.AsyncClient) -> None:
    raw = b'{"pad": "' + b"x" * JSON_LIMIT + b'"}'
    error = error_of(await http.post("/json", content=raw, headers=JSON), 413)
    assert error["type"] == "request_too_large"
    assert str(len(raw)) in error["message"] and str(JSON_LIMIT) in error["message"]


async def test_multipart_files_and_fields_are_read_within_the_upload_cap(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/form", data={"purpose": "x"}, files={"file": ("a.wav", b"0123456789", "audio/wav")}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"fields": [["purpose", "x"]], "files": [["file", "a.wav", "audio/wav", 10]]}
    over = await http.post("/form", files={"file": ("big.bin", b"x" * (UPLOAD_LIMIT + 1), "audio/wav")})
    assert error_of(over, 413)["type"] == "request_too_large"


async def test_more_files_than_allowed_or_a_multipart_body_without_boundary_is_400(
    http: httpx.AsyncClient,
) -> None:
    # Starlette answers these itself (an HTTPException inside an app), rendered as our envelope.
    two = await http.post(
        "/form", files=[("file", ("a", b"1", "audio/wav")), ("file", ("b", b"2", "audio/wav"))]
    )
    error = error_of(two, 400)
    assert error["type"] == "invalid_request" and "files" in error["message"]
    no_boundary = await http.post(
        "/form", content=b"garbage", headers={"content-type": "multipart/form-data"}
    )
    assert "boundary" in error_of(no_boundary, 400)["message"]


async def test_multipart_to_a_json_endpoint_and_json_to_an_upload_endpoint_are_415(
    http: httpx.AsyncClient,
) -> None:
    to_json = await http.post(
        "/infer/chat.completions", data={"model": "m"}, files={"f": ("a", b"1", "text/plain")}
    )
    assert error_of(to_json, 415)["param"] == "content-type"
    to_upload = await http.post("/infer/audio.transcriptions", json={"model": "m"})
    assert error_of(to_upload, 415)["param"] == "content-type"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ],
)
async def test_json_fields_of_the_wrong_type_are_400_naming_the_field(
    http: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    error = error_of(await http.post("/infer/chat.completions", json=body), 400)
    assert error["type"] == "invalid_request" and error["param"] == param


async def test_a_valid_json_body_names_its_model(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/infer/chat.completions", json={"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert answer.status_code == 200 and answer.json() == {"model": "m1", "multipart": False, "stream": None}


async def test_an_upload_endpoint_checks_its_required_file_and_its_type(http: httpx.AsyncClient) -> None:
    missing = await http.post(
        "/infer/audio.transcriptions", data={"model": "w"}, files={"other": ("a", b"1", "audio/wav")}
    )
    assert error_of(missing, 400)["param"] == "file"
    wrong_type = await http.post(
        "/infer/audio.transcriptions", data={"model": "w"}, files={"file": ("a.txt", b"1", "text/plain")}
    )
    assert error_of(wrong_type, 415)["param"] == "file"
    ok = await http.post(
        "/infer/audio.transcriptions",
        data={"model": "w", "stream": "TRUE"},
        files={"file": ("a.wav", b"RIFF", "audio/wav")},
    )
    # A form's "TRUE" passes the boolean check of `stream`; the field is forwarded as sent.
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"model": "w", "multipart": True, "stream": "TRUE"}


@pytest.mark.parametrize("value", ["true", "false"])
async def test_async_in_a_form_post_is_refused_whatever_its_value(
    http: httpx.AsyncClient, value: str
) -> None:
    answer = await http.post(
        "/infer/audio.transcriptions",
        data={"model": "w", "async": value},
        files={"file": ("a.wav", b"RIFF", "audio/wav")},
    )
    error = error_of(answer, 400)
    assert error["param"] == "async" and "synchronous only" in error["message"]


async def test_a_url_encoded_form_is_read_as_a_form_and_checked_by_the_endpoint(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.post("/infer/voice.generations", data={"script": "[S1] hi"})
    # Not refused as a non-JSON body: the endpoint's own check names its missing field.
    assert error_of(answer, 400)["param"] == "input"
