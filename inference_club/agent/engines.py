"""The OpenAI-compatible engines: where a hub path goes on the local server, how to list models.

These engines speak the OpenAI API under their service URL, so the relay passes requests
through (the default engine contract): the service URL plus the hub path after ``/v1``.
Engines with their own APIs (ComfyUI, AUTOMATIC1111, ...) have adapters in
``agent/adapters/`` instead. The pass-through engines differ in how models are listed:

- ``openai`` (and the OpenAI-compatible ``llamacpp``, ``vllm``, ``lmstudio``):
  ``GET {url}/models``.
- ``ollama``: ``GET {url}/models`` and Ollama's native ``GET {base}/api/tags``, where
  ``base`` is the service URL without its ``/v1`` suffix. An Ollama service URL given
  without ``/v1`` (``http://127.0.0.1:11434``) is accepted; ``/v1`` is appended.

The service's ``api_key`` goes to the local server as ``Authorization: Bearer`` and
nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .config import ServiceConfig

__all__ = [
    "DiscoveredModel",
    "Engine",
    "EngineListing",
    "OllamaEngine",
    "engine_for",
]


@dataclass(frozen=True, slots=True)
class DiscoveredModel:
    """A model a local server listed; only what the server itself declared."""

    id: str
    context_length: int | None = None


@dataclass(frozen=True, slots=True)
class EngineListing:
    """The outcome of one model-listing poll.

    ``reachable`` is true when the server accepted the connection (it answered anything
    over HTTP, or it is too busy to answer in time); ``models`` is ``None`` when no
    listing could be read (``problem`` says why). ``refused`` is true when nothing
    listens at the URL at all: the only failure that takes discovered models down at once.
    """

    reachable: bool
    models: tuple[DiscoveredModel, ...] | None
    problem: str | None = None
    refused: bool = False


# Parsed URLs kept per engine: the hub's paths are few, but a query string makes any
# number of them, so the memory is emptied when it is full.
_PARSED_URLS = 256


class Engine:
    """The OpenAI-compatible engine contract (``openai``, ``llamacpp``, ``vllm``, ...)."""

    def __init__(self, service: ServiceConfig) -> None:
        self.service = service
        self.name = service.engine
        self.openai_url = self._openai_url(service.url)
        self._parsed: dict[str, httpx.URL] = {}

    @staticmethod
    def _openai_url(url: str) -> str:
        return url.rstrip("/")

    def target_url(self, path: str) -> str:
        """Map a hub path (``/v1/audio/speech?x=1``) to the local server's URL."""
        if path == "/v1" or path.startswith(("/v1/", "/v1?")):
            rest = path[3:]
        else:
            raise ValueError(f"path must start with /v1/: {path!r}")
        return self.openai_url + rest

    def request_url(self, path: str) -> httpx.URL:
        """:meth:`target_url`, parsed once per path: parsing it cost more of the agent's CPU
        per relayed call than building the rest of the request."""
        url = self._parsed.get(path)
        if url is None:
            if len(self._parsed) >= _PARSED_URLS:
                self._parsed.clear()
            url = self._parsed[path] = httpx.URL(self.target_url(path))
        return url

    def auth_headers(self) -> dict[str, str]:
        if self.service.api_key:
            return {"authorization": f"Bearer {self.service.api_key}"}
        return {}

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        return await _openai_listing(client, self.openai_url + "/models", self.auth_headers(), timeout)


class OllamaEngine(Engine):
    """Ollama: OpenAI-compatible under ``/v1``, plus its native model list."""

    @staticmethod
    def _openai_url(url: str) -> str:
        url = url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"

    @property
    def base_url(self) -> str:
        return self.openai_url[: -len("/v1")]

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        native = await _ollama_tags(client, self.base_url + "/api/tags", self.auth_headers(), timeout)
        compat = await super().list_models(client, timeout=timeout)
        if native.models is None and compat.models is None:
            return EngineListing(
                reachable=native.reachable or compat.reachable,
                models=None,
                problem=native.problem or compat.problem,
                refused=native.refused and compat.refused,
            )
        merged: dict[str, DiscoveredModel] = {}
        for listing in (native, compat):
            for m in listing.models or ():
                if m.id not in merged or (
                    merged[m.id].context_length is None and m.context_length is not None
                ):
                    merged[m.id] = m
        return EngineListing(reachable=True, models=tuple(merged.values()))


def engine_for(service: ServiceConfig) -> Engine:
    """The adapter for a service's ``engine`` setting."""
    if service.engine == "ollama":
        return OllamaEngine(service)
    return Engine(service)


# --------------------------------------------------------------------------- listing


async def _get_json(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout: float
) -> tuple[Any, EngineListing | None]:
    """GET a JSON document; on any failure return the EngineListing describing it."""
    try:
        resp = await client.get(url, headers=dict(headers), timeout=timeout)
    except httpx.ConnectTimeout:
        return None, EngineListing(False, None, f"connect timed out after {timeout:g}s ({url})")
    except httpx.TimeoutException:
        # Connected, but no answer in time: a busy engine (llama.cpp lists slowly while generating).
        return None, EngineListing(True, None, f"listing timed out after {timeout:g}s, server busy? ({url})")
    except httpx.ConnectError as exc:
        return None, EngineListing(False, None, f"{_describe(exc)} ({url})", refused=True)
    except httpx.HTTPError as exc:
        return None, EngineListing(False, None, f"{_describe(exc)} ({url})")
    if resp.status_code != 200:
        return None, EngineListing(True, None, f"HTTP {resp.status_code} from {url}")
    try:
        return resp.json(), None
    except ValueError:
        return None, EngineListing(True, None, f"invalid JSON from {url}")


async def _listing(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    *,
    list_key: str,
    read: Callable[[dict[str, Any]], DiscoveredModel | None],
) -> EngineListing:
    """GET a model list document and read each entry of its ``list_key`` array."""
    doc, failed = await _get_json(client, url, headers, timeout)
    if failed is not None:
        return failed
    items = doc.get(list_key) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return EngineListing(True, None, f"no '{list_key}' list in the answer of {url}")
    models = tuple(m for item in items if isinstance(item, dict) and (m := read(item)) is not None)
    return EngineListing(True, models)


def _openai_model(item: dict[str, Any]) -> DiscoveredModel | None:
    model_id = item.get("id")
    if not isinstance(model_id, str) or not model_id:
        return None
    return DiscoveredModel(id=model_id, context_length=_declared_context(item))


def _ollama_model(item: dict[str, Any]) -> DiscoveredModel | None:
    name = item.get("model") or item.get("name")
    return DiscoveredModel(id=name) if isinstance(name, str) and name else None


async def _openai_listing(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout: float
) -> EngineListing:
    return await _listing(client, url, headers, timeout, list_key="data", read=_openai_model)


async def _ollama_tags(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout: float
) -> EngineListing:
    return await _listing(client, url, headers, timeout, list_key="models", read=_ollama_model)


def _declared_context(item: Mapping[str, Any]) -> int | None:
    """A context length the engine itself states (vLLM: max_model_len)."""
    for key in ("context_length", "max_model_len", "context_window"):
        value = item.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc).strip()
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind
