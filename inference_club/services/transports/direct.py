"""Direct transport: the hub calls the agent's HTTP listener at ``callback_url``.

Wire contract (docs/agent-protocol.md): ``{METHOD} {callback_url}/relay/{type}{path}``
with ``x-ic-agent-secret``, ``x-ic-model`` and ``x-request-id``; the agent answers
with the engine's status, headers and body, streamed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from inference_club.domain.providers import ProviderState
from inference_club.services.transports.base import (
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
)

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
     "content-encoding", "date", "server"}
)


class DirectResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP]
        self.agent_error = response.headers.get("x-ic-agent-error") == "1"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                if chunk:
                    yield chunk
        except httpx.TimeoutException as exc:
            raise TransportTimeout(str(exc) or "agent went silent") from exc
        except httpx.HTTPError as exc:
            raise TransportUnavailable(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class DirectTransport:
    name = "direct"

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> DirectResponse:
        if not provider.callback_url:
            raise TransportUnavailable(f"provider {provider.name!r} has no callback_url")
        url = f"{provider.callback_url.rstrip('/')}/relay/{request.service_type}{request.path}"
        headers = dict(request.headers)
        headers["x-ic-agent-secret"] = provider.agent_secret
        headers["x-ic-model"] = request.model
        headers["x-request-id"] = request.request_id
        built = self._client.build_request(request.method, url, headers=headers, content=request.body())
        try:
            response = await self._client.send(built, stream=True)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                raise TransportUnavailable(f"connect to {provider.name!r} timed out") from exc
            raise TransportTimeout(f"provider {provider.name!r} did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise TransportUnavailable(f"provider {provider.name!r} unreachable: {exc!r}") from exc
        return DirectResponse(response)

    async def aclose(self) -> None:
        """The shared client is owned by the container."""
