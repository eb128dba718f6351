"""One executor per answer kind, shared by synchronous calls, jobs, batches and retries.

Each executor opens the upstream through the router and then either *responds*
(a streaming HTTP answer for a synchronous call) or *collects* (a complete result for
a job). Both paths share the status handling and media capture below, so there is
exactly one way to call, say, an image provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import anyio
import orjson
from starlette.responses import JSONResponse, Response, StreamingResponse

from inference_club.domain.endpoints import AnswerKind, Endpoint
from inference_club.domain.web_content import user_content_headers
from inference_club.errors import AnswerTooLarge, HubError, UpstreamError, UpstreamStatus, UpstreamTimeout
from inference_club.services import token_counts
from inference_club.services.answers import (
    AnswerLimits,
    MediaJsonAnswer,
    MediaSink,
    base64_of,
    capped_chunks,
    file_placeholder,
    splice_files,
    store_media_json,
)
from inference_club.services.auth import Principal
from inference_club.services.bodies import Body, JsonBody
from inference_club.services.files import FileService, PendingFile
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
_TAIL = 64 * 1024  # the end of a JSON answer kept for its usage (OpenAI puts it last)
_WHOLE_ANSWER = 64 * 1024
"""A non-streamed answer read ahead up to this many bytes before its status goes out."""


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
            payload=body.raw if isinstance(body, JsonBody) else b"" if body is None else None,
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

    def __init__(
        self, router: Router, files: FileService, usage: UsageRecorder, limits: AnswerLimits
    ) -> None:
        self.router = router
        self.files = files
        self.usage = usage
        self.limits = limits

    async def open(self, call: Call, *, background: bool = False) -> Attempt:
        started = time.monotonic()
        try:
            return await self.router.open(
                call.principal, call.endpoint, call.upstream_request(), background=background
            )
        except asyncio.CancelledError:
            if not background:
                # The client left before any answer (waiting for a slot or for the engine's
                # head): the engine may have worked, so the request still gets its row.
                record = self._usage(call, None, 499)
                record.error_type = "client_disconnected"
                record.latency_ms = (time.monotonic() - started) * 1000
                self.usage.record(record)
            raise

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
        raw = await _read_error_body(attempt)
        await attempt.close(failed=status >= 500)
        error = upstream_error(
            status,
            raw,
            attempt.response.agent_error,
            owner=attempt.provider.user_id == call.principal.user_id,
            request_id=call.request_id,
            path=call.path or call.endpoint.path,
        )
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
        sink = MediaSink(pending, self.limits, sniff=None)
        try:
            async for chunk in capped_chunks(
                attempt.response, self.limits.answer_bytes, self.limits.answer_too_large
            ):
                if record.ttft_ms is None:
                    record.ttft_ms = (time.monotonic() - attempt.started) * 1000
                await sink.write(chunk)
                if held is not None:
                    yield held
                held = chunk
            # The file is on record before the last byte goes out, so a client that
            # follows x-file-url right after reading the body finds it.
            await sink.flush()
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
        except AnswerTooLarge:
            record.error_type = "upstream_error"
            record.status_code = 502
            log.warning("answer from %s refused: over a size cap", attempt.provider.name)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            record.error_type = "client_disconnected"
            record.status_code = 499
            raise
        finally:
            record.latency_ms = (time.monotonic() - attempt.started) * 1000
            self.usage.record(record)
            with anyio.CancelScope(shield=True):
                if not done:
                    await pending.writer.abort()
                await attempt.close(failed=record.error_type == "upstream_error")

    async def _read_all(self, call: Call, attempt: Attempt) -> bytes:
        """A JSON answer the hub keeps whole (a job's result): capped by the smaller of the caps."""
        limit = min(self.limits.answer_bytes, self.limits.json_bytes)
        too_large = (
            self.limits.answer_too_large if limit == self.limits.answer_bytes else self.limits.json_too_large
        )
        try:
            raw = await _read_limited(attempt, limit, too_large)
        except BaseException as exc:
            await attempt.close(failed=True)
            self._record_failure(call, attempt, exc)
            raise
        await attempt.close()
        self._record_success(call, attempt, token_counts.from_answer(raw))
        return raw

    async def _read_media_json(
        self, call: Call, attempt: Attempt, content_type: str, sniff: Callable[[bytes], str] | None = None
    ) -> MediaJsonAnswer:
        """A JSON answer whose ``b64_json`` values go straight into files as they arrive."""
        tail = b""

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal tail
            try:
                async for chunk in capped_chunks(
                    attempt.response, self.limits.answer_bytes, self.limits.answer_too_large
                ):
                    tail = (tail + chunk[-_TAIL:])[-_TAIL:]
                    yield chunk
            except TransportTimeout as exc:
                raise UpstreamTimeout(str(exc)) from exc
            except TransportUnavailable as exc:
                raise UpstreamError(f"The provider dropped the answer: {exc}") from exc

        try:
            stored = await store_media_json(
                chunks(),
                self.files,
                self.limits,
                user_id=call.principal.user_id,
                content_type=content_type,
                sniff=sniff,
            )
        except BaseException as exc:
            await attempt.close(failed=True)
            self._record_failure(call, attempt, exc)
            raise
        await attempt.close()
        self._record_success(call, attempt, token_counts.from_answer_tail(tail, complete=False))
        return stored

    def _record_success(self, call: Call, attempt: Attempt, counts: token_counts.TokenCounts | None) -> None:
        record = self._usage(call, attempt, attempt.response.status)
        record.latency_ms = (time.monotonic() - attempt.started) * 1000
        record.set_tokens(counts)
        self.usage.record(record)

    def _record_failure(self, call: Call, attempt: Attempt, exc: BaseException) -> None:
        if not isinstance(exc, HubError):
            return
        record = self._usage(call, attempt, exc.status_code)
        record.error_type = exc.type
        record.latency_ms = (time.monotonic() - attempt.started) * 1000
        self.usage.record(record)
        if isinstance(exc, AnswerTooLarge):
            log.warning("answer from %s refused: %s", attempt.provider.name, exc.message)


def upstream_error(
    status: int, raw: bytes, agent_error: bool, *, owner: bool = True, request_id: str = "", path: str = ""
) -> HubError:
    """The hub's error for an upstream error answer.

    An engine's raw error text (a 5xx body, a traceback, an HTML page) may reveal the
    provider's machine, so only the provider's owner reads it; other callers get the
    status, a short cause and the request id. Engine 4xx answers in OpenAI's envelope
    (a rejected parameter, a context overflow) and the agent's own errors are meant for
    the caller and pass through.
    """
    body = _loads_or_none(raw)
    enveloped = isinstance(body, dict) and isinstance(body.get("error"), dict)
    if not (owner or agent_error or (enveloped and 400 <= status < 500)):
        body, enveloped = None, False
        raw = _redacted(status, request_id).encode()
    message = _error_message(body, raw)
    if status == 404 and not agent_error and not enveloped and path:
        # An engine without the endpoint (llama-cpp-python has no /v1/responses) says only "Not Found".
        message = f"The provider's engine does not serve {path} (HTTP 404: {message})."
    if 400 <= status < 500 and status != 429 and not agent_error:
        wrapped = (
            body
            if enveloped
            else {"error": {"message": message, "type": "upstream_error", "param": None, "code": str(status)}}
        )
        return UpstreamStatus(status, wrapped, message)
    if agent_error and enveloped:
        return UpstreamStatus(status, body, message)
    if status == 504:
        return UpstreamTimeout(f"The provider timed out: {message}")
    if status == 429:
        return UpstreamStatus(
            429,
            body
            if enveloped
            else {"error": {"message": message, "type": "upstream_error", "param": None, "code": "429"}},
            message,
        )
    return UpstreamError(f"The provider's server failed ({status}): {message}")


def _redacted(status: int, request_id: str) -> str:
    try:
        cause = HTTPStatus(status).phrase.lower()
    except ValueError:
        cause = "error"
    return (
        f"the engine answered HTTP {status} ({cause}); its error text is shown to the provider's owner "
        f"only (request id {request_id or '-'})"
    )


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


async def _read_error_body(attempt: Attempt) -> bytes:
    """The start of an error answer (enough for its message); the rest is not read."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in attempt.response.aiter_bytes():
            chunks.append(chunk[: _MAX_ERROR_BODY - size])
            size += len(chunks[-1])
            if size >= _MAX_ERROR_BODY:
                break
    except (TransportTimeout, TransportUnavailable):
        pass  # the status already says it failed; keep what came
    return b"".join(chunks)


async def _read_limited(attempt: Attempt, limit: int, too_large: Callable[[], AnswerTooLarge]) -> bytes:
    chunks = []
    try:
        async for chunk in capped_chunks(attempt.response, limit, too_large):
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
    """JSON → JSON, JSON → SSE, multipart → JSON/text: the answer is relayed byte for byte.

    A stream goes out as it comes. A non-streamed answer is read ahead up to
    :data:`_WHOLE_ANSWER` bytes first: one that ends within them (nearly all do) is sent
    whole with a ``content-length``, its capacity slot already freed, and one that breaks
    off or runs over a cap meanwhile gets a clean error answer instead of a cut-off body.
    A longer one is streamed on from there.
    """

    async def respond(self, call: Call) -> Response:
        attempt = await self.open(call)
        await self._check_status(call, attempt)
        headers = _answer_headers(attempt)
        status = attempt.response.status
        record = self._usage(call, attempt, status)
        chunks = capped_chunks(attempt.response, self.limits.answer_bytes, self.limits.answer_too_large)
        if call.streaming:
            headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
            return StreamingResponse(
                self._relay(call, attempt, record, chunks), status_code=status, headers=headers
            )
        start, whole = await self._read_ahead(call, attempt, record, chunks)
        if whole:
            return Response(start, status_code=status, headers=headers)
        return StreamingResponse(
            self._relay(call, attempt, record, chunks, start), status_code=status, headers=headers
        )

    async def _read_ahead(
        self, call: Call, attempt: Attempt, record: Usage, chunks: AsyncIterator[bytes]
    ) -> tuple[bytes, bool]:
        """``(answer, True)``, recorded and the attempt closed, if it ends within
        :data:`_WHOLE_ANSWER` bytes; else ``(its start, False)``, the rest left to stream."""
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in chunks:
                if record.ttft_ms is None:
                    record.ttft_ms = (time.monotonic() - attempt.started) * 1000
                parts.append(chunk)
                size += len(chunk)
                if size >= _WHOLE_ANSWER:
                    return b"".join(parts), False
        except (TransportTimeout, TransportUnavailable, AnswerTooLarge) as exc:
            error = _unanswered(exc)
            record.error_type = error.type
            record.status_code = error.status_code
            log.warning("answer from %s refused: %s", attempt.provider.name, error.message)
            await self._finish(attempt, record, failed=True)
            raise error from None
        except BaseException as exc:  # the client left, or a failure of the hub's own
            left = isinstance(exc, asyncio.CancelledError)
            record.error_type = "client_disconnected" if left else "server_error"
            record.status_code = 499 if left else 500
            await self._finish(attempt, record, failed=False)  # not the provider's doing
            raise
        body = b"".join(parts)
        record.set_tokens(token_counts.from_answer_tail(body, complete=True))
        await self._finish(attempt, record, failed=False)
        return body, True

    async def _finish(self, attempt: Attempt, record: Usage, *, failed: bool) -> None:
        # Recorded before any await: a cancelled call may not get to run another step.
        record.latency_ms = (time.monotonic() - attempt.started) * 1000
        self.usage.record(record)
        # No shield: what cancels a call here is a plain Task.cancel() (the client left, the
        # server stops), which anyio's shield does not hold off. A close does what matters
        # (slot, stream, connection) before its first wait, so a cancel there loses nothing.
        await attempt.close(failed=failed)

    async def _relay(
        self,
        call: Call,
        attempt: Attempt,
        record: Usage,
        chunks: AsyncIterator[bytes],
        prefix: bytes = b"",
    ) -> AsyncIterator[bytes]:
        watch = token_counts.StreamUsage() if call.streaming else None
        size = len(prefix)
        tail = prefix[-_TAIL:]
        failed = False
        try:
            if prefix:
                yield prefix
            async for chunk in chunks:
                if record.ttft_ms is None:
                    record.ttft_ms = (time.monotonic() - attempt.started) * 1000
                if watch is not None:
                    watch.feed(chunk)
                else:
                    size += len(chunk)
                    tail = (tail + chunk)[-_TAIL:]
                yield chunk
            if watch is not None:
                watch.close()
                cause = _unfinished_stream(call, watch)
                if cause is not None:
                    failed = True
                    record.error_type = "upstream_error"
                    record.status_code = 502
                    log.warning("stream from %s: %s", attempt.provider.name, cause)
                    yield sse_error(cause)
        except (TransportTimeout, TransportUnavailable) as exc:
            failed = True
            record.error_type = "upstream_error"
            record.status_code = 504 if isinstance(exc, TransportTimeout) else 502
            log.warning("stream from %s broke: %s", attempt.provider.name, exc)
            if not call.streaming:
                raise  # the server drops the connection: an unfinished body, never a short one
            yield sse_error(f"The provider's stream broke: {exc}")
        except AnswerTooLarge as exc:
            # The status line is already out: a stream gets an error event, other
            # answers end unfinished (the client sees a truncated body).
            failed = True
            record.error_type = "upstream_error"
            record.status_code = 502
            log.warning("answer from %s cut off: %s", attempt.provider.name, exc.message)
            if not call.streaming:
                raise
            yield sse_error(exc.message)
        except (asyncio.CancelledError, GeneratorExit):
            record.error_type = "client_disconnected"
            record.status_code = 499
            raise
        finally:
            if watch is not None:
                record.set_tokens(watch.counts)
            elif tail:
                record.set_tokens(token_counts.from_answer_tail(tail, complete=size == len(tail)))
            await self._finish(attempt, record, failed=failed)

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


def _unanswered(exc: TransportTimeout | TransportUnavailable | AnswerTooLarge) -> UpstreamError:
    """The error answered for an answer that failed before its status went out."""
    if isinstance(exc, AnswerTooLarge):
        return exc
    if isinstance(exc, TransportTimeout):
        return UpstreamTimeout(f"The provider's answer broke off: {exc}")
    return UpstreamError(f"The provider's answer broke off: {exc}")


_DONE_TERMINATED = frozenset({"chat.completions", "completions"})


def _unfinished_stream(call: Call, watch: token_counts.StreamUsage) -> str | None:
    """Why a stream that ended cleanly is still a failure, or None when it is complete."""
    if not watch.started:
        return "The provider ended the stream without sending any event."
    if call.endpoint.name in _DONE_TERMINATED and not watch.done:
        return "The provider ended the stream before 'data: [DONE]'; the answer may be incomplete."
    return None


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
        headers.update(user_content_headers(content_type, pending.filename))  # engines are untrusted
        headers["x-file-id"] = pending.id
        headers["x-file-url"] = self.files.media_url(call.base_url, pending.id)
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
        result = {
            "file_id": stored[0].id,
            "url": self.files.media_url(call.base_url, stored[0].id),
            "content_type": content_type,
            "bytes": stored[0].bytes,
        }
        return Outcome(attempt.response.status, result, attempt.provider.id, stored)


class ImagesExecutor(Executor):
    """Images JSON: every image is stored as a file and answered as ``url`` or ``b64_json``.

    The engine is always asked for ``b64_json``; its answer is parsed as it arrives and
    each image decoded straight into its file, so no image is ever whole in memory.
    """

    async def respond(self, call: Call) -> Response:
        wanted, stored, attempt = await self._generate(call, background=False)
        if wanted != "b64_json":
            return JSONResponse(
                _images_result(stored, lambda f: {"url": self.files.media_url(call.base_url, f.id)})
            )
        # The answer's base64 is read back from the stored files while it is sent.
        records = list(stored.files.values())
        positions = {f.id: n for n, f in enumerate(records)}
        document = orjson.dumps(
            _images_result(stored, lambda f: {"b64_json": file_placeholder(positions[f.id])})
        )
        return StreamingResponse(
            splice_files(document, self.files, records),
            media_type="application/json",
            headers={"x-ic-provider": attempt.provider.name},
        )

    async def collect(self, call: Call, *, background: bool = False) -> Outcome:
        wanted, stored, attempt = await self._generate(call, background=background)
        inline: dict[str, str] = {}
        if wanted == "b64_json":
            # A job's result is kept whole in the database: images past the JSON cap
            # are answered by URL instead (the file is stored either way).
            budget = self.limits.json_bytes
            for record in stored.files.values():
                size = 4 * ((record.bytes + 2) // 3)
                if size <= budget:
                    budget -= size
                    inline[record.id] = "".join(
                        [p.decode() async for p in base64_of(self.files.content(record))]
                    )

        def reference(record: StoredFile) -> dict[str, Any]:
            if record.id in inline:
                return {"b64_json": inline[record.id]}
            if wanted == "b64_json":
                return {"url": self.files.media_url(call.base_url, record.id), "file_id": record.id}
            return {"url": self.files.media_url(call.base_url, record.id)}

        result = _images_result(stored, reference)
        return Outcome(attempt.response.status, result, attempt.provider.id, list(stored.files.values()))

    async def _generate(self, call: Call, *, background: bool) -> tuple[str, MediaJsonAnswer, Attempt]:
        wanted = (call.body.get("response_format") if call.body is not None else None) or "url"
        if call.body is not None:
            call.body = call.body.with_fields(response_format="b64_json")
        attempt = await self.open(call, background=background)
        await self._check_status(call, attempt)
        stored = await self._read_media_json(call, attempt, "application/octet-stream", sniff=_image_type)
        answer = stored.answer
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            for record in stored.files.values():
                with contextlib.suppress(Exception):
                    await self.files.delete(record.id, user_id=call.principal.user_id)
            raise UpstreamError("The image provider answered something other than OpenAI images JSON.")
        return str(wanted), stored, attempt


def _images_result(
    stored: MediaJsonAnswer, reference: Callable[[StoredFile], dict[str, Any]]
) -> dict[str, Any]:
    """The client's images JSON: each stored image in the form ``reference`` gives it."""
    answer = stored.answer
    assert isinstance(answer, dict)
    data = []
    for item in answer["data"]:
        if not isinstance(item, dict):
            continue
        out = {k: v for k, v in item.items() if k not in ("b64_json", "url")}
        index = item.get("b64_json")
        record = stored.files.get(index) if isinstance(index, int) else None
        if record is not None:
            out.update(reference(record))
        elif isinstance(item.get("url"), str):
            out["url"] = item["url"]
        data.append(out)
    result = {**answer, "data": data}
    result.setdefault("created", int(time.time()))
    return result


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
        extras: list[dict[str, Any]] = []  # generation metadata the engine gave per mesh
        if content_type.startswith("application/json"):
            stored = await self._read_media_json(call, attempt, "model/gltf-binary")
            answer = stored.answer
            items = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise UpstreamError("The mesh provider answered JSON without a data list.")
            for item in items:
                index = item.get("b64_json") if isinstance(item, dict) else None
                if isinstance(index, int) and index in stored.files:
                    files.append(stored.files[index])
                    extras.append({k: v for k, v in item.items() if k in _MESH_METADATA})
        else:
            pending = await self.files.begin(
                user_id=call.principal.user_id, content_type="model/gltf-binary", purpose="output"
            )
            async for _ in self._capture(call, attempt, pending, on_file=files.append):
                pass
        result = {
            "created": int(time.time()),
            "data": [
                {
                    **(extras[i] if i < len(extras) else {}),
                    "url": self.files.media_url(call.base_url, f.id),
                    "type": "model/gltf-binary",
                    "file_id": f.id,
                }
                for i, f in enumerate(files)
            ],
        }
        return Outcome(attempt.response.status, result, attempt.provider.id, files)


_MESH_METADATA = frozenset({"seed", "vertices", "faces", "seconds"})


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

    def __init__(
        self, router: Router, files: FileService, usage: UsageRecorder, limits: AnswerLimits
    ) -> None:
        self._by_kind = {kind: cls(router, files, usage, limits) for kind, cls in EXECUTOR_CLASSES.items()}

    @property
    def relay(self) -> Executor:
        """Plain relay, for calls outside the endpoint table (e.g. listing voices)."""
        return self._by_kind[AnswerKind.JSON]

    def for_endpoint(self, endpoint: Endpoint) -> Executor:
        return self._by_kind[endpoint.answer]
