"""The adapter seam: one interface between the agent's relay and a native engine API.

An adapter turns one hub request (method, ``/v1/...`` path, body) into the engine's own
calls and the engine's outcome into the hub's answer. The hub never learns which engine
sits behind a service: it sees OpenAI-shaped JSON, media bytes with their
``Content-Type``, or an error envelope.

- **Errors.** :class:`EngineRejected` (the engine, or the adapter, refused the request:
  a 4xx passed on as a client error), :class:`EngineFailed` (the engine broke: 502
  ``upstream_error``), :class:`EngineTimeout` (no outcome within the service's
  ``timeout``: 504 ``upstream_error``). An unreachable engine is an :class:`EngineFailed`.
- **Cancel.** The relay runs :meth:`Adapter.run` inside the transport's request task;
  when the hub cancels (client gone, job cancelled) that task is cancelled and the
  adapter calls the engine's own interrupt before the cancellation goes on
  (:func:`interrupting`).
- **Progress.** Long jobs call :attr:`EngineCall.report` with a value from 0 to 1 and a
  short stage text; the relay forwards it to the hub (over the tunnel or by HTTP).
- **Discovery and health.** :meth:`Adapter.list_models` lists models the engine's own
  way and tells whether it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..config import ServiceConfig
from ..engines import EngineListing

__all__ = [
    "Adapter",
    "AdapterConfigError",
    "Answer",
    "EngineCall",
    "EngineFailed",
    "EngineRejected",
    "EngineTimeout",
    "Form",
    "ProgressReport",
    "interrupting",
]

log = logging.getLogger("inference_club.agent.adapters")

ProgressReport = Callable[[float, str], None]

MAX_REQUEST_BYTES = 256 * 1024 * 1024


class AdapterConfigError(ValueError):
    """The service's configuration cannot work with this adapter (said at agent start)."""


class EngineRejected(Exception):
    """The request cannot be served as asked: a client error (4xx)."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status if 400 <= status < 500 else 400
        self.param = param


class EngineFailed(Exception):
    """The engine failed, answered nonsense or could not be reached (502)."""


class EngineTimeout(Exception):
    """The engine produced no outcome within the service's timeout (504)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the relay sends back to the hub for a native engine."""

    body: bytes
    content_type: str
    status: int = 200

    @classmethod
    def json(cls, data: Any, *, status: int = 200) -> Answer:
        return cls(orjson.dumps(data), "application/json", status)


@dataclass(slots=True)
class Form:
    """A parsed multipart or urlencoded body: text fields and uploaded files."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)
    """name → (filename, content type, bytes); the first file of each name."""

    def text(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value if value is None or value.strip() else None


@dataclass(slots=True)
class EngineCall:
    """One hub request as an adapter sees it."""

    method: str
    route: str  # "/v1/images/generations" (no query string)
    query: dict[str, str]
    content_type: str
    body: bytes
    model: str
    request_id: str
    report: ProgressReport = field(default=lambda value, stage: None)

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (EngineRejected otherwise)."""
        try:
            data = orjson.loads(self.body) if self.body else {}
        except orjson.JSONDecodeError:
            raise EngineRejected("the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise EngineRejected("the request body must be a JSON object")
        return data

    async def form(self) -> Form:
        """The body as multipart form data, parsed by Starlette's parser."""
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        scope = {
            "type": "http",
            "method": "POST",
            "path": self.route,
            "headers": [(b"content-type", self.content_type.encode("latin-1"))],
            "query_string": b"",
        }
        request = Request(scope, receive)
        out = Form()
        try:
            async with request.form(max_files=16, max_fields=256) as form:
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        if name not in out.files:
                            out.files[name] = (
                                value.filename or name,
                                value.content_type or "application/octet-stream",
                                await value.read(),
                            )
                    elif name not in out.fields:
                        out.fields[name] = value
        except EngineRejected:
            raise
        except Exception as exc:  # the parser raises several kinds for bad bodies
            raise EngineRejected(f"the request body is not valid form data: {exc}") from None
        return out


def parse_query(path: str) -> tuple[str, dict[str, str]]:
    route, _, query = path.partition("?")
    return route, dict(parse_qsl(query, keep_blank_values=True))


class Adapter:
    """One engine API. Subclasses implement :meth:`run` and :meth:`list_models`."""

    name = "native"
    native = True
    #: service types this engine can serve
    service_types: tuple[str, ...] = ()
    #: hub routes this adapter serves (others answer 404 ``invalid_request``)
    routes: tuple[str, ...] = ()

    def __init__(self, service: ServiceConfig, client: httpx.AsyncClient | None = None) -> None:
        self.service = service
        self.base_url = service.url.rstrip("/")
        self._client = client
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the adapter has no HTTP client yet")
        return self._client

    def bind(self, client: httpx.AsyncClient) -> None:
        """Use the agent's pooled client for every call to the engine."""
        self._client = client

    def check(self) -> None:
        """Validate what this adapter needs from the service config (AdapterConfigError)."""

    def headers(self) -> dict[str, str]:
        if self.service.api_key:
            return {"authorization": f"Bearer {self.service.api_key}"}
        return {}

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        raise NotImplementedError

    async def run(self, call: EngineCall) -> Answer:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses

    async def listing_json(
        self, client: httpx.AsyncClient, path: str, *, timeout: float
    ) -> tuple[Any, EngineListing | None]:
        """GET a model listing at ``path``: its JSON, or the listing that says why there is none.

        A refused connection means the engine is down; a bad status or body means it is up
        but its listing is unusable.
        """
        url = self.base_url + path
        try:
            response = await client.get(url, headers=self.headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            return None, EngineListing(False, None, f"{type(exc).__name__} ({url})")
        if response.status_code != 200:
            return None, EngineListing(True, None, f"HTTP {response.status_code} from {url}")
        try:
            return response.json(), None
        except ValueError:
            return None, EngineListing(True, None, f"invalid JSON from {url}")

    async def request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call to the engine; transport failures become EngineFailed/EngineTimeout."""
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        try:
            if timeout is not None:
                kwargs["timeout"] = timeout
            return await self.client.request(method, self.base_url + path, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise EngineTimeout(f"the {self.name} server did not answer {method} {path} in time") from exc
        except httpx.HTTPError as exc:
            raise EngineFailed(f"the {self.name} server is unreachable ({type(exc).__name__})") from exc

    async def engine_json(self, response: httpx.Response, what: str) -> Any:
        """The JSON of a successful engine answer; engine errors mapped by status."""
        self.raise_for_status(response, what)
        try:
            return response.json()
        except ValueError:
            raise EngineFailed(f"the {self.name} server answered {what} with invalid JSON") from None

    def raise_for_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 400:
            return
        detail = error_detail(response)
        if status == 429:
            raise EngineFailed(f"the {self.name} server is busy (429 on {what}): {detail}")
        if status < 500:
            raise EngineRejected(f"the {self.name} server refused {what}: {detail}", status=status)
        raise EngineFailed(f"the {self.name} server failed {what} ({status}): {detail}")

    async def probe(self, client: httpx.AsyncClient, path: str, *, timeout: float) -> EngineListing:
        """Reachability only: GET ``path``; the service advertises its declared models."""
        try:
            response = await client.get(self.base_url + path, headers=self.headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            return EngineListing(False, None, f"{type(exc).__name__} ({self.base_url}{path})")
        if response.status_code >= 400:
            return EngineListing(True, None, f"HTTP {response.status_code} from {self.base_url}{path}")
        return EngineListing(True, ())


def error_detail(response: httpx.Response) -> str:
    """The engine's own words about an error, briefly."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or f"HTTP {response.status_code}"
    if isinstance(data, dict):
        parts: list[str] = []
        for key in ("error", "detail", "message", "text", "errors"):
            value = data.get(key)
            if isinstance(value, str) and value:
                parts.append(value)
            elif isinstance(value, dict) and isinstance(value.get("message"), str):
                parts.append(str(value["message"]))
            elif isinstance(value, list) and value:
                parts.append(orjson.dumps(value).decode())
        if parts:
            return ": ".join(parts)[:300]
    return orjson.dumps(data).decode()[:300]


@contextlib.asynccontextmanager
async def interrupting(interrupt: Callable[[], Awaitable[None]], *, what: str = "job") -> AsyncIterator[None]:
    """Call the engine's interrupt when the body is cancelled or times out.

    The interrupt is shielded (it runs even though the task is being cancelled) and
    bounded, so a dead engine cannot hold the agent.
    """
    try:
        yield
    except (asyncio.CancelledError, EngineTimeout, TimeoutError):
        try:
            async with asyncio.timeout(5.0):
                await asyncio.shield(interrupt())
        except Exception as exc:  # the engine may be the thing that hangs
            log.warning("could not interrupt the engine's %s: %r", what, exc)
        raise


def pick(mapping: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present (not None) in ``mapping``."""
    for name in names:
        value = mapping.get(name)
        if value is not None:
            return value
    return None


def as_int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EngineRejected(f"'{name}' must be an integer", param=name)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EngineRejected(f"'{name}' must be an integer", param=name) from None


def as_float(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EngineRejected(f"'{name}' must be a number", param=name)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise EngineRejected(f"'{name}' must be a number", param=name) from None


def parse_size(size: Any, default: tuple[int, int] = (1024, 1024)) -> tuple[int, int]:
    """``"WxH"`` → (width, height)."""
    if size is None or size == "" or size == "auto":
        return default
    if isinstance(size, str) and "x" in size:
        w, _, h = size.partition("x")
        if w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
            return int(w), int(h)
    raise EngineRejected("'size' must look like 1024x1024", param="size")


AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "ogg": "audio/ogg",
    "aac": "audio/aac",
    "m4a": "audio/mp4",
}
MEDIA_TYPES = {
    **AUDIO_TYPES,
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "glb": "model/gltf-binary",
}


def media_type(filename: str, fallback: str = "application/octet-stream") -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return MEDIA_TYPES.get(ext, fallback)
