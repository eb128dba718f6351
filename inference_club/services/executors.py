"""One executor per answer kind, shared by synchronous calls, jobs, batches and retries.

Each executor opens the upstream through the router and then either *responds*
(a streaming HTTP answer for a synchronous call) or *collects* (a complete result for
a job). Both paths share the status handling and media capture below, so there is
exactly one way to call, say, an image provider.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response, StreamingResponse

from inference_club.domain.endpoints import AnswerKind, Endpoint
from inference_club.errors import HubError, UpstreamError, UpstreamStatus, UpstreamTimeout
from inference_club.services.auth import Principal
from inference_club.services.bodies import Body, JsonBody
from inference_club.services.files import FileService, PendingFile, file_url
from inference_club.services.router import Attempt, Router
from inference_club.services.transports.base import (
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
)
from inference_club.services.usage import Usage, UsageRecorder
from inference_club.store.tables import StoredFile

log = logging.getLogger("inference_club.executors")

_MAX_ERROR_BODY = 1024 * 1024
_MAX_JSON_ANSWER = 512 * 1024 * 1024
_TAIL = 4096
_USAGE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')


@dataclass(slots=True)
class Call:
    """One inference request, however it arrived (HTTP, job, batch item, workflow step)."""

    principal: Principal
    endpoint: Endpoint
    model: str
    body: Body | None
    request_id: str
    base_url: str
    method: str = "POST"
    query: str = ""
    path: str | None = None

    @property
    def streaming(self) -> bool:
        return isinstance(self.body, JsonBody) and self.body.get("stream") is True

    def upstream_request(self) -> UpstreamRequest:
        body = self.body
        headers = {"accept": "*/*"}
        if body is not None:
            headers["content-type"] = body.content_type
        path = self.path or self.endpoint.upstream_path
        if self.query:
            path = f"{path}?{self.query}"

        return UpstreamRequest(
            service_type=self.endpoint.service_type.value,
            model=self.model,
            method=self.method,
            path=path,
            headers=headers,
            body=body.chunks if body is not None else _no_body,
            request_id=self.request_id,
        )


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # makes this an async generator


@dataclass(slots=True)
class Outcome:
    """What a job keeps of a finished call."""

    status: int
    result: Any
    provider_id: str
    files: list[StoredFile] = field(default_factory=list)


class Executor:
    kind: AnswerKind

    def __init__(self, router: Router, files: FileService, usage: UsageRecorder) -> None:
        self.router = router
        self.files = files
        self.usage = usage

    async def open(self, call: Call, *, background: bool = False) -> Attempt:
        return await self.router.open(call.principal, call.endpoint, call.upstream_request(), background=background)

    async def respond(self, call: Call) -> Response:
        raise NotImplementedError

    async def collect(self, call: Call, *, background: bool = False) -> Outcome:
        raise NotImplementedError

    # Shared pieces -------------------------------------------------------------

    def _usage(self, call: Call, attempt: Attempt | None, status: int) -> Usage:
        return Usage(
            request_id=call.request_id,
            user_id=call.principal.user_id,
            key_id=call.principal.key_id,
            provider_id=attempt.provider.id if attempt else None,
            endpoint=call.endpoint.name,
            model=call.model,
            status_code=status,
            latency_ms=0.0,
        )

    async def _check_status(self, call: Call, attempt: Attempt) -> None:
        """Turn an upstream error answer into the hub's typed error (closing the attempt)."""
        status = attempt.response.status
        if status < 400:
            return
        raw = await _read_limited(attempt, _MAX_ERROR_BODY)
        await attempt.close(failed=status >= 500)
        error = upstream_error(status, raw, attempt.response.agent_error)
        record = self._usage(call, attempt, error.status_code)
        record.error_type = error.type
        record.latency_ms = (time.monotonic() - attempt.started) * 1000
        self.usage.record(record)
        raise error

    async def _capture(
        self, call: Call, attempt: Attempt, pending: PendingFile, on_file: Callable[[StoredFile], None] | None
    ) -> AsyncIterator[bytes]:
        record = self._usage(call, attempt, attempt.response.status)
        held: bytes | None = None
        done = False
        try:
            async for chunk in attempt.response.aiter_bytes():
                if record.ttft_ms is None:
                    record.ttft_ms = (time.monotonic() - attempt.started) * 1000
                await pending.writer.write(chunk)
                if held is not None:
                    yield held
                held = chunk
            # The file is on record before the last byte goes out, so a client that
            # follows x-file-url right after reading the body finds it.
            stored = await self.files.finish(pending)
            done = True
            if on_file is not None:
                on_file(stored)
            if held is not None:
                yield held
        except (TransportTimeout, TransportUnavailable) as exc:
            record.error_type = "upstream_error"
            record.status_code = 502
            raise UpstreamError(f"The provider's answer broke off: {exc}") from exc
        finally:
            if not done:
                await pending.writer.abort()
            await attempt.close(failed=record.error_type == "upstream_error")
            record.latency_ms = (time.monotonic() - attempt.started) * 1000
            self.usage.record(record)

    async def _read_all(self, call: Call, attempt: Attempt) -> bytes:
        try:
            raw = await _read_limited(attempt, _MAX_JSON_ANSWER)
        except BaseException:
            await attempt.close(failed=True)
            raise
        await attempt.close()
        record = self._usage(call, attempt, attempt.response.status)
        record.latency_ms = (time.monotonic() - attempt.started) * 1000
        match = _USAGE.search(raw[-_TAIL:])
        if match:
            record.set_tokens(_loads_or_none(match.group(1)))
        self.usage.record(record)
        return raw


def upstream_error(status: int, raw: bytes, agent_error: bool) -> HubError:
    body = _loads_or_none(raw)
    enveloped = isinstance(body, dict) and isinstance(body.get("error"), dict)
    message = _error_message(body, raw)
    if 400 <= status < 500 and status != 429 and not agent_error:
        wrapped = body if enveloped else {
            "error": {"message": message, "type": "upstream_error", "param": None, "code": str(status)}
        }
        return UpstreamStatus(status, wrapped, message)
    if agent_error and enveloped:
        return UpstreamStatus(status, body, message)
    if status == 504:
        return UpstreamTimeout(f"The provider timed out: {message}")
    if status == 429:
        return UpstreamStatus(429, body if enveloped else {
            "error": {"message": message, "type": "upstream_error", "param": None, "code": "429"}
        }, message)
    return UpstreamError(f"The provider's server failed ({status}): {message}")


def _error_message(body: Any, raw: bytes) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(body.get("detail"), str):
            return str(body["detail"])
    text = raw.decode("utf-8", "replace").strip()
    return text[:500] or "no detail"


def _loads_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


async def _read_limited(attempt: Attempt, limit: int) -> bytes:
    chunks = []
    size = 0
    try:
        async for chunk in attempt.response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise UpstreamError(f"The provider's answer exceeded {limit} bytes.")
            chunks.append(chunk)
    except TransportTimeout as exc:
        raise UpstreamTimeout(str(exc)) from exc
    except TransportUnavailable as exc:
        raise UpstreamError(f"The provider dropped the answer: {exc}") from exc
    return b"".join(chunks)


def _answer_headers(attempt: Attempt, keep: tuple[str, ...] = ("content-type",)) -> dict[str, str]:
    headers = {k: v for k, v in attempt.response.headers if k.lower() in keep}
    headers["x-ic-provider"] = attempt.provider.name
    return headers


class RelayExecutor(Executor):
    """JSON → JSON, JSON → SSE, multipart → JSON/text: the answer is relayed byte for byte."""

    async def respond(self, call: Call) -> Response:
        attempt = await self.open(call)
        await self._check_status(call, attempt)
        headers = _answer_headers(attempt)
        if call.streaming:
            headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
        return StreamingResponse(
            self._relay(call, attempt),
            status_code=attempt.response.status,
            headers=headers,
        )

    async def _relay(self, call: Call, attempt: Attempt) -> AsyncIterator[bytes]:
        record = self._usage(call, attempt, attempt.response.status)
        tail = b""
        failed = False
        try:
            async for chunk in attempt.response.aiter_bytes():
                if record.ttft_ms is None:
                    record.ttft_ms = (time.monotonic() - attempt.started) * 1000
                tail = (tail + chunk)[-_TAIL:]
                yield chunk
        except (TransportTimeout, TransportUnavailable) as exc:
            failed = True
            record.error_type = "upstream_error"
            record.status_code = 504 if isinstance(exc, TransportTimeout) else 502
            log.warning("stream from %s broke: %s", attempt.provider.name, exc)
            if call.streaming:
                yield sse_error(f"The provider's stream broke: {exc}")
        except (asyncio.CancelledError, GeneratorExit):
            record.error_type = "client_disconnected"
            record.status_code = 499
            raise
        finally:
            await attempt.close(failed=failed)
            record.latency_ms = (time.monotonic() - attempt.started) * 1000
            matches = _USAGE.findall(tail)
            if matches:
                record.set_tokens(_loads_or_none(matches[-1]))
            self.usage.record(record)

    async def collect(self, call: Call, *, background: bool = False) -> Outcome:
        if isinstance(call.body, JsonBody) and call.body.get("stream"):
            call.body = call.body.without("stream", "stream_options")
        attempt = await self.open(call, background=background)
        await self._check_status(call, attempt)
        raw = await self._read_all(call, attempt)
        result = _loads_or_none(raw)
        if result is None:
            result = raw.decode("utf-8", "replace")
        return Outcome(attempt.response.status, result, attempt.provider.id)


def sse_error(message: str) -> bytes:
    payload = {"error": {"message": message, "type": "upstream_error", "param": None, "code": None}}
    return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"


class MediaExecutor(Executor):
    """JSON/multipart → media bytes: streamed to the client and into a file at once."""

    async def respond(self, call: Call) -> Response:
        attempt = await self.open(call)
        await self._check_status(call, attempt)
        content_type = dict(attempt.response.headers).get("content-type", "application/octet-stream")
        pending = await self.files.begin(
            user_id=call.principal.user_id, content_type=content_type, purpose="output"
        )
        headers = _answer_headers(attempt)
        headers["x-file-id"] = pending.id
        headers["x-file-url"] = file_url(call.base_url, pending.id)
        return StreamingResponse(
            self._capture(call, attempt, pending, on_file=None),
            status_code=attempt.response.status,
            headers=headers,
        )

    async def collect(self, call: Call, *, background: bool = False) -> Outcome:
        attempt = await self.open(call, background=background)
        await self._check_status(call, attempt)
        content_type = dict(attempt.response.headers).get("content-type", "application/octet-stream")
        pending = await self.files.begin(
            user_id=call.principal.user_id, content_type=content_type, purpose="output"
        )
        stored: list[StoredFile] = []
        async for _ in self._capture(call, attempt, pending, on_file=stored.append):
            pass
        result = {"file_id": stored[0].id, "url": file_url(call.base_url, stored[0].id),
                  "content_type": content_type, "bytes": stored[0].bytes}
        return Outcome(attempt.response.status, result, attempt.provider.id, stored)


class ImagesExecutor(Executor):
    """Images JSON: every image is stored as a file and answered as ``url`` or ``b64_json``."""

    async def respond(self, call: Call) -> Response:
        outcome = await self.collect(call)
        return JSONResponse(outcome.result)

    async def collect(self, call: Call, *, background: bool = False) -> Outcome:
        wanted = (call.body.get("response_format") if call.body is not None else None) or "url"
        if call.body is not None:
            call.body = call.body.with_fields(response_format="b64_json")
        attempt = await self.open(call, background=background)
        await self._check_status(call, attempt)
        raw = await self._read_all(call, attempt)
        answer = _loads_or_none(raw)
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise UpstreamError("The image provider answered something other than OpenAI images JSON.")
        files: list[StoredFile] = []
        data = []
        for item in answer["data"]:
            if not isinstance(item, dict):
                continue
            out = {k: v for k, v in item.items() if k not in ("b64_json", "url")}
            b64 = item.get("b64_json")
            if isinstance(b64, str):
                image = _b64decode(b64)
                stored = await self.files.save(
                    user_id=call.principal.user_id, data=image, content_type=_image_type(image),
                    purpose="output",
                )
                files.append(stored)
                out["url" if wanted == "url" else "b64_json"] = (
                    file_url(call.base_url, stored.id) if wanted == "url" else b64
                )
            elif isinstance(item.get("url"), str):
                out["url"] = item["url"]
            data.append(out)
        result = {**answer, "data": data}
        result.setdefault("created", int(time.time()))
        return Outcome(attempt.response.status, result, attempt.provider.id, files)


class MeshExecutor(Executor):
    """3D: GLB bytes or ``{"data":[{"b64_json"}]}`` in, files and URLs out."""

    async def respond(self, call: Call) -> Response:
        outcome = await self.collect(call)
        return JSONResponse(outcome.result)

    async def collect(self, call: Call, *, background: bool = False) -> Outcome:
        attempt = await self.open(call, background=background)
        await self._check_status(call, attempt)
        content_type = dict(attempt.response.headers).get("content-type", "")
        files: list[StoredFile] = []
        if content_type.startswith("application/json"):
            answer = _loads_or_none(await self._read_all(call, attempt))
            items = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise UpstreamError("The mesh provider answered JSON without a data list.")
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
                    files.append(await self.files.save(
                        user_id=call.principal.user_id, data=_b64decode(item["b64_json"]),
                        content_type="model/gltf-binary", purpose="output",
                    ))
        else:
            pending = await self.files.begin(
                user_id=call.principal.user_id, content_type="model/gltf-binary", purpose="output"
            )
            async for _ in self._capture(call, attempt, pending, on_file=files.append):
                pass
        result = {
            "created": int(time.time()),
            "data": [{"url": file_url(call.base_url, f.id), "type": "model/gltf-binary", "file_id": f.id}
                     for f in files],
        }
        return Outcome(attempt.response.status, result, attempt.provider.id, files)


def _b64decode(value: str) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise UpstreamError("The provider sent invalid base64 media.") from exc


def _image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


EXECUTOR_CLASSES: dict[AnswerKind, type[Executor]] = {
    AnswerKind.JSON: RelayExecutor,
    AnswerKind.STREAM: RelayExecutor,
    AnswerKind.TEXT_OR_JSON: RelayExecutor,
    AnswerKind.MEDIA_BYTES: MediaExecutor,
    AnswerKind.IMAGES: ImagesExecutor,
    AnswerKind.MESH: MeshExecutor,
}


class Executors:
    """The executor for each answer kind, built once."""

    def __init__(self, router: Router, files: FileService, usage: UsageRecorder) -> None:
        self._by_kind = {kind: cls(router, files, usage) for kind, cls in EXECUTOR_CLASSES.items()}

    @property
    def relay(self) -> Executor:
        """Plain relay, for calls outside the endpoint table (e.g. listing voices)."""
        return self._by_kind[AnswerKind.JSON]

    def for_endpoint(self, endpoint: Endpoint) -> Executor:
        return self._by_kind[endpoint.answer]
