"""Running one relayed request through a native engine adapter.

The request body is read whole (engines with their own APIs take JSON or small
uploads), the adapter runs under the service's ``timeout``, and its outcome or error
becomes the status, headers and body the transport sends back:

- a 4xx refusal is answered as the engine's client error (not marked as the agent's),
  so the hub passes it on with its status;
- an engine failure or an unreachable engine is 502 ``upstream_error``, a timeout 504,
  both marked ``x-ic-agent-error: 1``.

Progress reports are throttled here (at most one every ``PROGRESS_MIN_INTERVAL_S`` per
request, plus the last one) before they reach the :data:`ProgressSink`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

import orjson

from .adapters.base import (
    MAX_REQUEST_BYTES,
    EngineCall,
    EngineFailed,
    EngineRejected,
    EngineTimeout,
    parse_query,
)

if TYPE_CHECKING:
    from .discovery import ServiceState

__all__ = ["PROGRESS_MIN_INTERVAL_S", "ProgressSink", "run_native"]

log = logging.getLogger("inference_club.agent.native")

ProgressSink = Callable[[str, float, str], None]
"""``(request_id, value 0..1, stage)``: hands one progress report to the transport."""

PROGRESS_MIN_INTERVAL_S = 0.25
_AGENT_ERROR_HEADER = "x-ic-agent-error"

Outcome = tuple[int, list[tuple[str, str]], bytes]


def _error(status: int, error_type: str, message: str, *, agent: bool, param: str | None = None) -> Outcome:
    body = orjson.dumps({"error": {"message": message, "type": error_type, "param": param, "code": None}})
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    if agent:
        headers.append((_AGENT_ERROR_HEADER, "1"))
    return status, headers, body


def _throttled(request_id: str, sink: ProgressSink | None) -> Callable[[float, str], None]:
    last_at, last_value, last_stage = 0.0, -1.0, ""

    def report(value: float, stage: str) -> None:
        nonlocal last_at, last_value, last_stage
        if sink is None:
            return
        value = min(1.0, max(0.0, float(value)))
        now = time.monotonic()
        changed_stage = stage != last_stage
        if not changed_stage and value < 1.0 and now - last_at < PROGRESS_MIN_INTERVAL_S:
            return
        if not changed_stage and value == last_value:
            return
        last_at, last_value, last_stage = now, value, stage
        try:
            sink(request_id, value, stage[:200])
        except Exception:  # progress is best effort; the request goes on
            log.debug("could not send progress", exc_info=True)

    return report


async def _read_body(body: AsyncIterator[bytes]) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise EngineRejected(f"the request body is larger than {MAX_REQUEST_BYTES} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def run_native(
    service: ServiceState,
    *,
    method: str,
    model: str,
    path: str,
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    request_id: str,
    progress: ProgressSink | None,
    default_timeout_s: float = 600.0,
) -> Outcome:
    """Run the request; never raises for engine trouble (only for cancellation)."""
    adapter = service.adapter
    assert adapter is not None
    route, query = parse_query(path)
    if route not in adapter.routes:
        return _error(404, "invalid_request", f"the {adapter.name} engine does not serve {route}", agent=True)
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    timeout_s = service.config.timeout_s or default_timeout_s
    try:
        call = EngineCall(
            method=method,
            route=route,
            query=query,
            content_type=content_type,
            body=await _read_body(body),
            model=model,
            request_id=request_id,
            report=_throttled(request_id, progress),
        )
        try:
            async with asyncio.timeout(timeout_s):
                answer = await adapter.run(call)
        except TimeoutError:
            raise EngineTimeout(f"the {adapter.name} engine gave no result within {timeout_s:g}s") from None
    except EngineRejected as exc:
        adapter.last_error = None
        return _error(exc.status, "invalid_request", str(exc), agent=False, param=exc.param)
    except EngineTimeout as exc:
        adapter.last_error = "timeout"
        log.warning("%s (request_id=%s)", exc, request_id)
        return _error(504, "upstream_error", str(exc), agent=True)
    except EngineFailed as exc:
        adapter.last_error = str(exc)[:200]
        log.warning("%s (request_id=%s)", exc, request_id)
        return _error(502, "upstream_error", str(exc), agent=True)
    except Exception as exc:  # a bug in an adapter, or an engine answer it did not expect
        adapter.last_error = f"adapter error: {type(exc).__name__}"
        log.exception("the %s adapter failed (request_id=%s)", adapter.name, request_id)
        return _error(
            502, "upstream_error", f"the agent's {adapter.name} adapter failed: {exc!r}"[:300], agent=True
        )
    adapter.last_error = None
    call.report(1.0, "done")
    out_headers = [("content-type", answer.content_type), ("content-length", str(len(answer.body)))]
    return answer.status, out_headers, answer.body
