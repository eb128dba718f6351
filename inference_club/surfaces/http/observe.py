"""One pure ASGI middleware per request: its id, its metrics and its log line.

- ``x-request-id``: the client's when it is sane, else a new one; on every answer, in
  ``scope["state"]["request_id"]`` for the routes, and sent on to the agent.
- Metrics: in-flight count, requests by route template/method/model/status, duration by
  route, body bytes both ways. Plain counter updates; nothing is awaited here beyond the
  app and the server's ``send``.
- One log line (logger ``inference_club.access``) when the answer is finished: request
  id, method, path, status, milliseconds, bytes in and out, user, model and provider.
  It never holds a header, a query string or a body, so keys, prompts and file
  contents cannot reach it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference_club.domain.randomness import random_hex
from inference_club.http_server import BODY_BYTES
from inference_club.redact import redact
from inference_club.services.metrics import HubMetrics, RequestFacts

log = logging.getLogger("inference_club.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestObserver:
    """See the module docstring. Innermost of the hub's middleware, so it sees the matched route."""

    def __init__(self, app: ASGIApp, *, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else "req_" + random_hex(12)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        facts = state["facts"] = RequestFacts()
        metrics = self.metrics
        open_requests = metrics.open_requests
        # A client may reuse its id on concurrent requests: the first one gets the call's facts.
        owns_id = request_id not in open_requests
        if owns_id:
            open_requests[request_id] = facts
        metrics.in_flight += 1
        id_header = (b"x-request-id", request_id.encode())
        status = 0
        sent = 0

        async def observed_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b"")) + message.get(BODY_BYTES, 0)
            elif message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        failure = 0
        try:
            await self.app(scope, receive, observed_send)
        except asyncio.CancelledError:
            failure = 499  # the server cancelled the request: its client went away
            raise
        except BaseException:
            failure = 500
            raise
        finally:
            metrics.in_flight -= 1
            if owns_id:
                del open_requests[request_id]
            if failure and (failure == 499 or not status):
                status = failure
            self._record(scope, state, facts, request_id, status, sent, time.perf_counter() - started)

    def _record(
        self,
        scope: Scope,
        state: dict[str, Any],
        facts: RequestFacts,
        request_id: str,
        status: int,
        sent: int,
        elapsed_s: float,
    ) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method: str = scope["method"]
        received: int = state.get("body_bytes", 0)
        metrics = self.metrics
        metrics.requests.add(
            (template, method if method in _METHODS else "OTHER", facts.model or "", str(status))
        )
        metrics.duration.observe((template,), elapsed_s)
        if received:
            metrics.request_bytes.add((), received)
        if sent:
            metrics.response_bytes.add((), sent)
        if not log.isEnabledFor(logging.INFO):
            return
        path: str = scope["path"]
        log.info(
            "request",
            extra={
                "fields": {
                    "request_id": request_id,
                    "method": method[:16],
                    "path": redact(path[:512]),
                    "status": status,
                    "ms": round(elapsed_s * 1000, 1),
                    "bytes_in": received,
                    "bytes_out": sent,
                    "user": facts.user_id,
                    "model": facts.model,
                    "provider": facts.provider_id,
                }
            },
        )
