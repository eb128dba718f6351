"""HTTP plumbing of the fake engine: request accounting, fault playback, field parsing.

`TrackingMiddleware` counts every /v1 request and how it ended. Handlers answer with a
`Playback`, which applies the request's fault and paces the body while watching the
client: a disconnect, even during a hang or between stream chunks, cancels the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_club.testing.fake_state import FakeEngineState, FakeEngineStats, Fault, LastRequest

RECORD_KEY = "fake_engine.record"


class ApiError(Exception):
    """Answered as an OpenAI error envelope."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class DropConnection(Exception):
    """Raised mid-answer to make the server close the socket (a `break_after` fault)."""


def error_body(
    message: str, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- request tracking ---------------------------------------------------------------------


class RequestRecord:
    """Per-request bookkeeping shared by the tracking middleware and the handlers."""

    def __init__(self, stats: FakeEngineStats, last: LastRequest) -> None:
        self.stats, self.last = stats, last
        self.model: str | None = None
        self.disconnected = False
        self.completed = False

    def set_model(self, model: str) -> None:
        if self.model is not None:
            return
        self.model = self.last.model = model
        per_model = self.stats.model(model)
        per_model.requests += 1
        per_model.in_flight += 1
        per_model.max_in_flight = max(per_model.max_in_flight, per_model.in_flight)


class TrackingMiddleware:
    """Counts every /v1 request, its body size and how it ended; checks the api key."""

    def __init__(self, app: ASGIApp, state: FakeEngineState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        stats = self.state.stats
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        expected_key = self.state.settings.api_key
        if expected_key and headers.get("authorization") != f"Bearer {expected_key}":
            body = error_body("Incorrect API key provided", 401, code="invalid_api_key")
            await JSONResponse(body, status_code=401)(scope, receive, send)
            return
        last = LastRequest(method=scope["method"], path=scope["path"], headers=headers)
        record = RequestRecord(stats, last)
        scope[RECORD_KEY] = record
        stats.last_request = last
        stats.requests[scope["path"]] += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                last.body_size += len(message.get("body", b""))
            elif message["type"] == "http.disconnect":
                record.disconnected = True
            return message

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                record.completed = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except (DropConnection, ClientDisconnect):
            # Returning without finishing the answer makes uvicorn close the socket.
            pass
        finally:
            stats.in_flight -= 1
            if record.model is not None:
                stats.model(record.model).in_flight -= 1
            if record.completed:
                stats.completed += 1
            elif record.disconnected:
                stats.aborted += 1
            else:
                stats.dropped += 1


# --- answers and their playback -------------------------------------------------------------


@dataclass
class Reply:
    """An answer before faults and pacing are applied."""

    status: int
    media_type: str
    chunks: Iterable[bytes]
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay_s: float = 0.0
    content_length: int | None = None

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        body = json.dumps(data).encode()
        return cls(status, "application/json", [body], content_length=len(body))

    @classmethod
    def text(cls, text: str, media_type: str = "text/plain; charset=utf-8") -> Reply:
        body = text.encode()
        return cls(200, media_type, [body], content_length=len(body))


def fault_reply(fault: Fault) -> Reply:
    assert fault.status is not None
    status = fault.status
    if fault.body is None:
        reply = Reply.json(error_body(f"injected failure ({status})", status), status)
    elif isinstance(fault.body, str):
        reply = Reply.text(fault.body)
        reply.status = status
    else:
        reply = Reply.json(fault.body, status)
    if status in (429, 503):
        reply.headers["retry-after"] = "1"
    return reply


async def _forever() -> None:
    await asyncio.Event().wait()


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class Playback:
    """ASGI response playing a reply under a fault while watching for client disconnect.

    The watcher runs for the whole answer, including latency, hangs and the sleeps between
    stream chunks, so a client that goes away cancels the work at once.
    """

    def __init__(self, reply: Reply, fault: Fault | None) -> None:
        self.reply, self.fault = reply, fault

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        play = asyncio.ensure_future(self._play(send))
        watch = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({play, watch}, return_when=asyncio.FIRST_COMPLETED)
            if play in done:
                play.result()
        finally:
            for task in (play, watch):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, DropConnection):
                    await task

    async def _play(self, send: Send) -> None:
        reply, fault = self.reply, self.fault or Fault()
        if fault.latency_s:
            await asyncio.sleep(fault.latency_s)
        if fault.hang:
            await _forever()
        headers = [(b"content-type", reply.media_type.encode())]
        if reply.content_length is not None:
            headers.append((b"content-length", str(reply.content_length).encode()))
        headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        sent = 0
        for chunk in reply.chunks:
            await self._maybe_cut(fault, sent)
            if sent and reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += 1
            await asyncio.sleep(0)  # let the disconnect watcher run between big chunks
        await self._maybe_cut(fault, sent, at_end=True)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _maybe_cut(fault: Fault, sent: int, at_end: bool = False) -> None:
        if fault.stall_after is not None and (sent >= fault.stall_after or at_end):
            await _forever()
        if fault.break_after is not None and (sent >= fault.break_after or at_end):
            raise DropConnection


# --- request parsing helpers ----------------------------------------------------------------


async def json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body())
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def number_field(
    body: dict[str, Any] | FormData, name: str, default: float, low: float, high: float
) -> float:
    value = body.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ApiError(400, f"'{name}' must be a number", name)
    try:
        number = float(value)
    except ValueError:
        raise ApiError(400, f"'{name}' must be a number", name) from None
    if not low <= number <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high}", name)
    return number


def integer_field(body: dict[str, Any] | FormData, name: str, default: int, low: int, high: int) -> int:
    number = number_field(body, name, default, low, high)
    if number != int(number):
        raise ApiError(400, f"'{name}' must be an integer", name)
    return int(number)


def text_field(body: dict[str, Any] | FormData, name: str, required: bool = False) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"'{name}' is required", name)
        return ""
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a string", name)
    return value


def requested_model(body: dict[str, Any] | FormData, state: FakeEngineState, required: bool = True) -> str:
    default = state.settings.models[0] if state.settings.models else "fake"
    model = text_field(body, "model", required=required) or default
    if state.settings.strict_models and model not in state.settings.models:
        raise ApiError(404, f"The model `{model}` does not exist", "model", "model_not_found")
    return model


async def read_upload(form: FormData, name: str) -> tuple[str, bytes] | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        return value.filename or name, await value.read()
    return None


def pieces(text: str) -> list[str]:
    """Word-like tokens whose concatenation is the text (a stand-in for a tokenizer)."""
    return re.findall(r"^\s+|\S+\s*", text)


def count_tokens(text: str) -> int:
    return len(pieces(text))


def split_even(text: str, parts: int) -> list[str]:
    """`parts` slices of `text` (some empty when the text is short), joined back exactly."""
    bounds = [len(text) * i // parts for i in range(parts + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(parts)]


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def media_size(body: dict[str, Any] | FormData, state: FakeEngineState) -> int | None:
    default = state.settings.media_size_bytes
    size = integer_field(body, "fake_size_bytes", default or 0, 0, 1 << 40)
    return size or None


def text_inputs(value: Any, param: str) -> list[str]:
    """OpenAI's prompt/input forms: a string, strings, token ids, or lists of token ids."""

    def is_tokens(item: Any) -> bool:
        return isinstance(item, list) and bool(item) and all(isinstance(t, int) for t in item)

    items = [value] if isinstance(value, str) or is_tokens(value) else value
    if not isinstance(items, list) or not items:
        raise ApiError(400, f"'{param}' must be a string or a non-empty array", param)
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif is_tokens(item):
            texts.append(" ".join(map(str, item)))
        else:
            raise ApiError(400, f"'{param}' items must be strings or token arrays", param)
    return texts
