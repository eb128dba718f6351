"""The relay: one hub request in, one local-engine request out, streamed both ways.

This is the seam every transport uses (the direct HTTP server today, the WebSocket
tunnel later): a transport turns its framing into one :meth:`Relay.open` call and
pumps the :class:`RelayResponse` back. Nothing here knows about ASGI or frames.

- The service is chosen among those of ``service_type`` that advertise ``model``;
  with several, the one with the fewest requests in flight.
- The request body is streamed to the engine as it arrives; the engine's answer is
  streamed back chunk by chunk as the socket yields it, never buffered.
- Errors the agent produces itself carry ``x-ic-agent-error: 1`` and the OpenAI error
  envelope: no service → 404 ``no_provider``; engine unreachable → 502 and engine
  timeout → 504, both ``upstream_error``. An engine's own 4xx/5xx is relayed unchanged.
- :meth:`RelayResponse.aclose` aborts the engine request if it is still running (the
  connection is dropped, so the engine sees its client go away).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx
import orjson

from inference_club.domain.http_headers import HOP_BY_HOP_HEADERS
from inference_club.netpool import PooledClient, StreamedAnswer, pooled_client
from inference_club.redact import redact
from inference_club.waiting import wait_event

from .discovery import Catalog, ServiceState
from .metrics import RelayOutcome
from .native import ProgressSink, run_native

__all__ = [
    "AGENT_ERROR_HEADER",
    "Relay",
    "RelayResponse",
    "RelayStreamError",
    "agent_error_response",
    "engine_connection_limit",
    "make_engine_client",
]

log = logging.getLogger("inference_club.agent.relay")

AGENT_ERROR_HEADER = "x-ic-agent-error"

# Request headers that never reach an engine: transport and hub internals, the hub's
# credentials, and encodings (the agent asks engines for identity bodies). The hub's
# request id stays in the agent's log: llama-cpp-python's server answers 400 to any
# x-request-id that is not a UUID.
_DROP_REQUEST_HEADERS = HOP_BY_HOP_HEADERS | {
    "host",
    "authorization",
    "cookie",
    "accept-encoding",
    "expect",
    "x-request-id",
}
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class RelayStreamError(Exception):
    """The engine's answer broke off after its status and headers were relayed.

    The transport can no longer change the status: it must end the stream abnormally
    (drop the connection, send a reset frame) so the hub does not take a truncated
    body for a complete one.
    """


ENGINE_CONNECTIONS_FLOOR = 512
ENGINE_CONNECTIONS_SPARE = 64
"""Connections beside the relayed calls: health checks, discovery, native adapters' polls."""


def engine_connection_limit(max_concurrencies: Iterable[int]) -> int:
    """How many connections the engine client may hold: every service at its
    ``max_concurrency`` at once, and spares; never fewer than the floor.

    A fixed cap below the configured concurrency would queue calls the hub was told the
    agent takes (and fail them after the pool timeout).
    """
    return max(ENGINE_CONNECTIONS_FLOOR, sum(max_concurrencies) + ENGINE_CONNECTIONS_SPARE)


def make_engine_client(
    *,
    connect_timeout_s: float = 10.0,
    request_timeout_s: float = 600.0,
    max_connections: int = ENGINE_CONNECTIONS_FLOOR,
) -> PooledClient:
    """The one pooled client the agent uses to reach its local servers.

    ``trust_env`` is off: local servers are never reached through a proxy configured
    for the outside world.
    """
    return pooled_client(
        timeout=httpx.Timeout(
            connect=connect_timeout_s,
            read=request_timeout_s,
            write=request_timeout_s,
            pool=30.0,
        ),
        # Idle connections are dropped before the usual 5 s server keep-alive, so a
        # request never goes out on a connection the engine is closing.
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=64, keepalive_expiry=2.0
        ),
    )


def agent_error_response(status: int, error_type: str, message: str) -> RelayResponse:
    """An answer the agent makes itself, marked with ``x-ic-agent-error: 1``."""
    body = orjson.dumps({"error": {"message": message, "type": error_type, "param": None, "code": None}})
    return RelayResponse(
        status,
        [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            (AGENT_ERROR_HEADER, "1"),
        ],
        body=body,
    )


class RelayResponse:
    """The status, headers and (streamed) body of one relayed request.

    Iterate :meth:`aiter_bytes` once, and always :meth:`aclose` (or use ``async
    with``): closing before the body is complete aborts the engine request.
    """

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        *,
        body: bytes = b"",
        upstream: StreamedAnswer | None = None,
        relay: Relay | None = None,
        service: ServiceState | None = None,
        log_fields: Mapping[str, str] | None = None,
        started_at: float | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self._body = body
        self._upstream = upstream
        self._relay = relay
        self._service = service
        self._log_fields = dict(log_fields or {})
        self._started_at = time.monotonic() if started_at is None else started_at
        self._iterated = False
        self._completed = upstream is None
        self._closed = False
        self._bytes = 0
        self._chunks: AsyncIterator[bytes] | None = None
        self._lead = b""
        self._lead_failure: RelayStreamError | None = None

    @property
    def agent_error(self) -> bool:
        """True when the agent, not the engine, produced this answer."""
        return any(k == AGENT_ERROR_HEADER for k, _ in self.headers)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<RelayResponse {self.status} closed={self._closed}>"

    async def read_lead(self) -> None:
        """Read the first bytes of an answer with a length now, so that they leave with the head.

        An engine served by uvicorn writes an answer's head and its body apart: sent on
        as they come, they cost a message (or a write) more on every hop and wake the
        hub twice. A client can do nothing with such a head before the body anyway. A
        stream's head (no length) goes on at once, as does an empty body's. A failure
        while reading is raised by :meth:`aiter_bytes`, after the head, as before.
        """
        if self._upstream is None or self._chunks is not None:
            return
        length = next((v for k, v in self.headers if k == "content-length"), "")
        if not length.strip() or length.strip() == "0":
            return
        self._chunks = self._upstream.aiter_raw()
        try:
            async for chunk in self._chunks:
                if chunk:
                    self._lead = chunk
                    return
        except httpx.HTTPError as exc:
            self._lead_failure = _stream_error(exc)
            self._lead_failure.__cause__ = exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as the engine sends it. Closes the response at the end.

        Raises :class:`RelayStreamError` when the engine's answer breaks off.
        """
        if self._iterated:
            raise RuntimeError("the body of a RelayResponse can be read only once")
        self._iterated = True
        try:
            if self._upstream is None:
                if self._body:
                    self._bytes = len(self._body)
                    yield self._body
                return
            if self._lead_failure is not None:
                raise self._lead_failure
            if self._lead:
                lead, self._lead = self._lead, b""
                self._bytes += len(lead)
                yield lead
            try:
                async for chunk in self._chunks or self._upstream.aiter_raw():
                    if chunk:
                        self._bytes += len(chunk)
                        yield chunk
            except httpx.HTTPError as exc:
                raise _stream_error(exc) from exc
            self._completed = True
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Release the service slot; abort the engine request if it is still running."""
        if self._closed:
            return
        self._closed = True
        if self._upstream is not None:
            try:
                await self._upstream.aclose()
            except Exception:  # pragma: no cover - closing a broken stream
                log.debug("error while closing an engine response", exc_info=True)
        if self._relay is not None:
            self._relay._finished(self, self._service)

    async def __aenter__(self) -> RelayResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # used by Relay for its log line and metrics
    def _outcome(self) -> tuple[dict[str, Any], RelayOutcome]:
        seconds = time.monotonic() - self._started_at
        f = self._log_fields
        service = f.get("service", "-")
        fields: dict[str, Any] = {
            "service": service,
            "model": f.get("model", "-"),
            "method": f.get("method", "-"),
            "path": redact(f.get("path", "-")),
            "status": self.status,
            "ms": round(seconds * 1000),
            "bytes": self._bytes,
        }
        if not self._completed:
            fields["aborted"] = True
        fields["request_id"] = f.get("request_id", "-")
        outcome = RelayOutcome(
            service, self.status, seconds, agent_error=self.agent_error, aborted=not self._completed
        )
        return fields, outcome


class Relay:
    """Routes relayed requests to the right local service over one pooled client."""

    def __init__(self, catalog: Catalog, client: PooledClient | None = None) -> None:
        self.catalog = catalog
        self._owns_client = client is None
        self.client = client if client is not None else make_engine_client()
        self._idle = asyncio.Event()
        self._idle.set()
        self.progress: ProgressSink | None = None
        """Where native adapters' progress goes (set by the runner for its transport)."""
        self.on_finished: Callable[[RelayOutcome], None] | None = None
        """Sees how each relayed request ended (the agent's metrics)."""
        for service in catalog.services:
            if service.adapter is not None:
                service.adapter.bind(self.client)

    def __repr__(self) -> str:
        return f"<Relay services={len(self.catalog.services)} in_flight={self.in_flight}>"

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.catalog.services)

    def pick(self, service_type: str, model: str) -> ServiceState | None:
        """The service that should take this request, or None."""
        candidates = self.catalog.candidates(service_type, model)
        if not candidates:
            return None
        return min(candidates, key=lambda s: s.in_flight)

    async def open(
        self,
        *,
        service_type: str,
        model: str,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: AsyncIterator[bytes] | bytes,
    ) -> RelayResponse:
        """Send one request to the engine serving (service_type, model).

        ``path`` is the hub's path, starting with ``/v1/``, with the query string if
        any (``/v1/audio/voices?model=x``). ``headers`` are the caller's, with
        lower- or mixed-case names; hop-by-hop and hub headers are not forwarded.
        ``body``: bytes when it is all in hand, else its chunks as they come.
        Returns once the engine has answered with its status and headers.
        """
        started_at = time.monotonic()
        method = method.upper()
        fields = {
            "service": f"{service_type}/-",
            "model": model or "-",
            "method": method,
            "path": path,
            "request_id": _header(headers, "x-request-id") or "-",
        }
        problem = _check_path(path)
        if problem is not None:
            return self._logged(agent_error_response(400, "invalid_request", problem), fields, started_at)
        service = self.pick(service_type, model)
        if service is None:
            return self._logged(
                agent_error_response(
                    404,
                    "no_provider",
                    f"no {service_type!r} service on this agent serves model {model!r}",
                ),
                fields,
                started_at,
            )
        fields["service"] = f"{service_type}#{service.index}"
        if service.adapter is not None:
            chunks = _just(body) if isinstance(body, bytes) else body
            return await self._native(service, method, model, path, headers, chunks, fields, started_at)
        url = service.engine.request_url(path)
        out_headers = _forward_headers(headers)
        out_headers.update(service.engine.auth_headers())
        out_headers["accept-encoding"] = "identity"

        service.in_flight += 1
        self._idle.clear()
        try:
            content = await _request_content(method, headers, body)
            upstream = await self.client.open_stream(method, url, headers=out_headers, content=content)
        except httpx.ConnectTimeout:
            self._release(service)
            return self._logged(
                agent_error_response(
                    502,
                    "upstream_error",
                    f"the local {service_type} server did not accept a connection in time",
                ),
                fields,
                started_at,
            )
        except httpx.TimeoutException:
            self._release(service)
            return self._logged(
                agent_error_response(504, "upstream_error", f"the local {service_type} server timed out"),
                fields,
                started_at,
            )
        except httpx.HTTPError as exc:
            self._release(service)
            return self._logged(
                agent_error_response(
                    502,
                    "upstream_error",
                    f"the local {service_type} server is unreachable ({type(exc).__name__})",
                ),
                fields,
                started_at,
            )
        except BaseException:
            self._release(service)
            raise
        return RelayResponse(
            upstream.status_code,
            _response_headers(upstream.headers.raw),
            upstream=upstream,
            relay=self,
            service=service,
            log_fields=fields,
            started_at=started_at,
        )

    async def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight (at most ``timeout`` s); True when idle."""
        return await wait_event(self._idle, timeout)

    async def aclose(self) -> None:
        """Close the pooled client if this relay created it."""
        if self._owns_client:
            await self.client.aclose()

    async def _native(
        self,
        service: ServiceState,
        method: str,
        model: str,
        path: str,
        headers: Mapping[str, str],
        body: AsyncIterator[bytes],
        fields: dict[str, str],
        started_at: float,
    ) -> RelayResponse:
        """Run one request through the service's native adapter (see ``adapters/``)."""
        assert service.adapter is not None
        service.in_flight += 1
        self._idle.clear()
        try:
            status, out_headers, content = await run_native(
                service,
                method=method,
                model=model,
                path=path,
                headers=headers,
                body=body,
                request_id=fields["request_id"],
                progress=self.progress,
                default_timeout_s=self.client.timeout.read or 600.0,
            )
        except BaseException:
            self._release(service)
            raise
        response = RelayResponse(status, out_headers, body=content, service=service)
        return self._logged(response, fields, started_at)

    # ------------------------------------------------------------------ internals

    def _logged(self, response: RelayResponse, fields: Mapping[str, str], started_at: float) -> RelayResponse:
        response._log_fields = dict(fields)
        response._started_at = started_at
        response._relay = self
        return response

    def _release(self, service: ServiceState) -> None:
        service.in_flight = max(0, service.in_flight - 1)
        if self.in_flight == 0:
            self._idle.set()

    def _finished(self, response: RelayResponse, service: ServiceState | None) -> None:
        if service is not None:
            self._release(service)
        fields, outcome = response._outcome()
        log.info("relay", extra={"fields": fields})
        if self.on_finished is not None:
            self.on_finished(outcome)


# --------------------------------------------------------------------------- helpers


def _stream_error(exc: httpx.HTTPError) -> RelayStreamError:
    if isinstance(exc, httpx.TimeoutException):
        return RelayStreamError("the engine stopped sending (read timeout)")
    return RelayStreamError(f"the engine's answer broke off: {exc!r}")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


_NOT_IN_PATH = re.compile(r"[\x00-\x20\x7f#]")


def _check_path(path: str) -> str | None:
    # Runs on every relayed call: one search and, only for a path with "/." in it, a
    # look at its segments (instead of a generator step per character).
    if not (path == "/v1" or path.startswith(("/v1/", "/v1?"))):
        return f"path must start with /v1/, got {path!r}"
    route = path.split("?", 1)[0]
    if "/." in route and any(seg in ("..", ".") for seg in route.split("/")):
        return "path must not contain '.' or '..' segments"
    if _NOT_IN_PATH.search(path):
        return "path contains characters that are not allowed"
    return None


def _forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    connection_named = {
        t.strip().lower() for t in (_header(headers, "connection") or "").split(",") if t.strip()
    }
    out: dict[str, str] = {}
    for k, v in headers.items():
        name = k.lower()
        if name in _DROP_REQUEST_HEADERS or name in connection_named or name.startswith("x-ic-"):
            continue
        out[name] = v
    return out


def _response_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
    connection_named = {t.strip().lower() for k, v in pairs if k == "connection" for t in v.split(",")}
    return [
        (k, v)
        for k, v in pairs
        if k not in HOP_BY_HOP_HEADERS and k not in connection_named and k != AGENT_ERROR_HEADER
    ]


async def _request_content(
    method: str, headers: Mapping[str, str], body: AsyncIterator[bytes] | bytes
) -> AsyncIterator[bytes] | bytes | None:
    """What httpx should send as the request body.

    Bytes in hand go with their length. With a Content-Length the body streams as is.
    Without one, the first chunk is awaited: an empty body is sent as no body at all (a
    GET must not turn chunked), anything else streams chunked.
    """
    length = _header(headers, "content-length")
    if isinstance(body, bytes):
        return body or (None if method in _BODYLESS_METHODS or length is None else b"")
    if length is not None and length.strip() != "0":
        return body
    first = b""
    async for chunk in body:
        if chunk:
            first = chunk
            break
    if not first:
        return None if method in _BODYLESS_METHODS or length is None else b""
    return _chain(first, body)


async def _just(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        if chunk:
            yield chunk
