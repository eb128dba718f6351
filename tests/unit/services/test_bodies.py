"""Request bodies: JSON keeps its bytes until changed; multipart re-encodes to what a server parses back."""

from __future__ import annotations

import tempfile
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

from inference_club.services.bodies import JsonBody, MultipartBody, UploadPart


def test_json_body_keeps_the_client_bytes_until_a_field_changes() -> None:
    raw = b'{"model": "m",  "input": "x"}'  # odd spacing: re-serialising would show
    body = JsonBody(raw, orjson.loads(raw))
    assert body.without("async") is body and body.without("async").raw == raw
    stripped = JsonBody(b'{"model":"m","async":true}', {"model": "m", "async": True}).without("async")
    assert orjson.loads(stripped.raw) == {"model": "m"} == stripped.data
    changed = body.with_fields(model="other")
    assert orjson.loads(changed.raw) == {"model": "other", "input": "x"} and body.get("model") == "m"


async def _parse(body: MultipartBody) -> dict[str, Any]:
    """Parse the encoded body with Starlette's own multipart parser, as an engine's server would."""
    encoded = b"".join([chunk async for chunk in body.chunks()])
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": encoded, "more_body": False}

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", body.content_type.encode())]}
    form = await Request(scope, receive).form()
    parsed: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            parsed[name] = (value.filename, value.content_type, await value.read())
        else:
            parsed[name] = value
    await form.close()
    return parsed


def _upload(field: str, filename: str, data: bytes, content_type: str) -> UploadPart:
    spooled = tempfile.SpooledTemporaryFile()
    spooled.write(data)
    return UploadPart(field=field, filename=filename, content_type=content_type, file=spooled, size=len(data))


async def test_multipart_body_is_parsed_back_and_replays_for_failover() -> None:
    body = MultipartBody(
        fields=[("model", "whisper"), ("prompt", "héllo")],
        files=[_upload("file", "a.wav", b"RIFF" + bytes(range(256)), "audio/wav")],
    )
    expected = {
        "model": "whisper",
        "prompt": "héllo",
        "file": ("a.wav", "audio/wav", b"RIFF" + bytes(range(256))),
    }
    try:
        assert await _parse(body) == expected
        assert await _parse(body) == expected  # a second provider gets the same bytes
        changed = body.with_fields(model="other").without("prompt")
        assert await _parse(changed) == {"model": "other", "file": expected["file"]}
        assert body.get("model") == "whisper" and changed.get("prompt") is None
    finally:
        body.close()


async def test_multipart_names_cannot_break_out_of_their_header() -> None:
    body = MultipartBody(
        fields=[('we"ird\r\nX-Injected: 1', "v")],
        files=[_upload("file", 'a"\r\nb.png', b"png", "image/png")],
    )
    try:
        encoded = b"".join([chunk async for chunk in body.chunks()])
        assert b"\r\nX-Injected" not in encoded
        parsed = await _parse(body)
        assert parsed["we%22ird%0D%0AX-Injected: 1"] == "v"
        assert parsed["file"][0] == "a%22%0D%0Ab.png"
    finally:
        body.close()
