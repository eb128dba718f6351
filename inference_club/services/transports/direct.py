"""Direct transport: the hub calls the agent's HTTP listener at ``callback_url``.

Wire contract (docs/agent-protocol.md): ``{METHOD} {callback_url}/relay/{type}{path}``
with ``x-ic-agent-secret``, ``x-ic-model`` and ``x-request-id``; the agent answers
with the engine's status, headers and body, streamed.

The URL is built from the parsed callback URL's parts, and the connection goes to an
address the callback policy checked just now (names are re-resolved, so a name that
re-binds into a blocked network after the heartbeat is refused here).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx

from inference_club.domain.callback_url import CallbackUrl, IPAddress, parse_callback_url
from inference_club.domain.http_headers import ANSWER_HEADERS_NOT_RELAYED
from inference_club.domain.providers import ProviderState
from inference_club.errors import InvalidRequest
from inference_club.netpool import PooledClient, StreamedAnswer
from inference_club.services.callback_policy import CallbackBlocked, CallbackPolicy
from inference_club.services.transports.base import (
    BadResponseHead,
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
    check_response_head,
)

log = logging.getLogger("inference_club.direct")


class DirectResponse:
    def __init__(self, response: StreamedAnswer) -> None:
        self._response = response
        self.status = response.status_code
        # Latin-1, byte for byte: httpx would decode UTF-8 into text HTTP cannot carry back out.
        self.raw_headers = [
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw
        ]
        self.headers = [(k, v) for k, v in self.raw_headers if k.lower() not in ANSWER_HEADERS_NOT_RELAYED]
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


# Agent URLs kept parsed: building one costs about as much as the rest of the request;
# the memory is emptied when full (a query string makes any number of them).
_CACHED_URLS = 1024


class DirectTransport:
    name = "direct"

    def __init__(self, client: PooledClient, policy: CallbackPolicy) -> None:
        self._client = client
        self._policy = policy
        self._urls: dict[tuple[CallbackUrl, IPAddress, str, str], httpx.URL] = {}

    def _url(self, target: CallbackUrl, address: IPAddress, relay_path: str, query: str) -> httpx.URL:
        key = (target, address, relay_path, query)
        url = self._urls.get(key)
        if url is None:
            url = httpx.URL(scheme=target.scheme, host=str(address), port=target.port, path=relay_path)
            if query:
                url = url.copy_with(query=query.encode("ascii", "replace"))
            if len(self._urls) >= _CACHED_URLS:
                self._urls.clear()
            self._urls[key] = url
        return url

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> DirectResponse:
        target, addresses = await self._checked_target(provider)
        path, _, query = request.path.partition("?")
        # As bytes: a model id may be any UTF-8 text, and httpx would encode a str as ASCII.
        headers = [(b"host", target.netloc.encode())]
        headers += [(k.encode(), v.encode()) for k, v in request.headers.items() if k.lower() != "host"]
        headers += [
            (b"x-ic-agent-secret", provider.agent_secret.encode()),
            (b"x-ic-model", request.model.encode()),
            (b"x-request-id", request.request_id.encode()),
        ]
        # The certificate is still checked against the name the agent registered.
        sni_hostname = target.host if target.scheme == "https" and target.ip is None else None
        relay_path = target.relay_path(request.service_type, path)
        for index, address in enumerate(addresses):
            url = self._url(target, address, relay_path, query)
            try:
                response = await self._client.open_stream(
                    request.method,
                    url,
                    headers=headers,
                    # Bytes in hand go with a length, in the head's write; else streamed, chunked.
                    content=request.payload if request.payload is not None else request.body(),
                    sni_hostname=sni_hostname,
                )
            except httpx.ConnectError:
                if index + 1 < len(addresses):
                    continue  # the name has another checked address: try it
                raise TransportUnavailable(f"provider {provider.name!r} refused the connection") from None
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                    raise TransportUnavailable(f"connect to {provider.name!r} timed out") from exc
                raise TransportTimeout(f"provider {provider.name!r} did not answer in time") from exc
            except httpx.HTTPError as exc:
                raise TransportUnavailable(f"provider {provider.name!r} unreachable: {exc!r}") from exc
            answer = DirectResponse(response)
            try:
                check_response_head(provider.name, answer.status, answer.raw_headers)
            except BadResponseHead:
                await response.aclose()
                raise
            return answer
        raise TransportUnavailable(f"provider {provider.name!r} has no address")

    async def _checked_target(self, provider: ProviderState) -> tuple[CallbackUrl, list[IPAddress]]:
        """The parsed callback URL and the addresses it reaches, checked just now."""
        if not provider.callback_url:
            raise TransportUnavailable(f"provider {provider.name!r} has no callback_url")
        try:
            target = parse_callback_url(provider.callback_url)
            return target, await self._policy.addresses(target)
        except (InvalidRequest, CallbackBlocked) as exc:
            log.warning("not calling provider %r: %s", provider.name, exc)
            raise TransportUnavailable(f"provider {provider.name!r} callback refused: {exc}") from None

    async def aclose(self) -> None:
        """The shared client is owned by the container."""
