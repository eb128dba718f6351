"""``POST /internal/relay/{provider_id}``: another hub replica's request for a tunnel held here.

Only between replicas (not in the OpenAPI document): the call must be signed with
``IC_CLUSTER_SECRET`` (401 otherwise) and the route does not exist (404) on a hub
that does not relay. The wire format is described in ``cluster/relay.py``.

A plain ASGI endpoint, because the request body and the answer stream at once: the body
is read from ``receive`` only as fast as the agent grants credits, the answer is sent
chunk by chunk as the agent's frames arrive (uvicorn waits while the caller's socket is
full, and then no more credits go to the agent), and the caller's disconnect cancels
the tunnel stream, which cancels the engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inference_club.cluster.relay import (
    ANSWER_HEADER,
    FAILURE_HEADER,
    HEAD_HEADER,
    RELAY_PREFIX,
    SIGNATURE_HEADER,
    TIME_HEADER,
    ClusterSigner,
    decode_head,
    encode_answer,
)
from inference_club.domain.providers import ProviderState
from inference_club.errors import AuthError, Busy, NotFound, UpstreamError, UpstreamTimeout
from inference_club.services.container import Hub
from inference_club.services.transports.base import (
    BadResponseHead,
    TransportBusy,
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
)
from inference_club.services.transports.tunnel import TunnelResponse, TunnelTransport

log = logging.getLogger("inference_club.cluster")

_UVICORN_INCOMPLETE = "ASGI callable returned without completing response"
# Set in the request's own context when the answer was cut short on purpose.
_broken_off: ContextVar[bool] = ContextVar("relay_broken_off", default=False)


class _CutShortIsNotAnError(logging.Filter):
    """Drop uvicorn's ERROR for an answer this route ended without its last chunk on purpose.

    That is how the calling replica learns the agent's answer broke off; uvicorn logs it
    in the request's task right after the endpoint returns, so the context variable
    tells ours from a real one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_broken_off.get() and record.getMessage().startswith(_UVICORN_INCOMPLETE))


def _quiet_uvicorn_cut_short() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _CutShortIsNotAnError) for f in server_log.filters):
        server_log.addFilter(_CutShortIsNotAnError())


class _Incoming:
    """The caller's side of the exchange: its body, pulled on demand, then its disconnect."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._body_done = asyncio.Event()
        self.gone = asyncio.Event()

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self._body_done.set()
                return

    async def wait_gone(self) -> None:
        await self._body_done.wait()
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone.set()


class RelayEndpoint:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub: Hub = scope["app"].state.hub
        settings = hub.settings
        transport = hub.transports.by_name.get("tunnel")
        if not (settings.redis_url and settings.cluster_secret) or not isinstance(transport, TunnelTransport):
            raise NotFound("Not Found")
        headers = Headers(scope=scope)
        provider_id: str = scope["path_params"]["provider_id"]
        head_text = headers.get(HEAD_HEADER, "")
        signer = ClusterSigner(settings.cluster_secret)
        if not signer.verify(
            provider_id,
            head_text,
            headers.get(TIME_HEADER, ""),
            headers.get(SIGNATURE_HEADER, ""),
            now=time.time(),
        ):
            log.warning("relay refused: a missing or wrong cluster signature (provider %s)", provider_id[:64])
            raise AuthError("The cluster signature is missing, expired or wrong.")
        head = decode_head(head_text)
        provider = hub.registry.get(provider_id)
        if provider is None:
            raise UpstreamError(f"No provider {provider_id!r} here.", headers={FAILURE_HEADER: "unavailable"})
        incoming = _Incoming(receive)
        request = UpstreamRequest(
            service_type=head.service_type,
            model=head.model,
            method=head.method,
            path=head.path,
            headers=head.headers,
            body=incoming.body,
            request_id=head.request_id,
        )
        # One watcher for the whole exchange (not a race per chunk): the caller's
        # disconnect cancels the work, and closing the tunnel answer resets the stream.
        work = asyncio.create_task(_relay(transport, provider, request, send), name="relay")
        watcher = asyncio.create_task(incoming.wait_gone(), name="relay-disconnect")
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, work):
                task.cancel()  # no-op on a finished task
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if work.cancelled():
            return  # the caller went away
        # An error before the answer's head propagates here, to the app's error handlers.
        if not work.result():
            _quiet_uvicorn_cut_short()
            _broken_off.set(True)


async def _relay(
    transport: TunnelTransport, provider: ProviderState, request: UpstreamRequest, send: Send
) -> bool:
    """Relay the exchange; False when the answer broke off after its head."""
    try:
        response = await transport.send_local(provider, request)
    except BadResponseHead as exc:
        raise UpstreamError(str(exc), headers={FAILURE_HEADER: "bad_head"}) from exc
    except TransportBusy as exc:
        raise Busy(str(exc), headers={FAILURE_HEADER: "busy"}) from exc
    except TransportUnavailable as exc:
        raise UpstreamError(str(exc), headers={FAILURE_HEADER: "unavailable"}) from exc
    except TransportTimeout as exc:
        raise UpstreamTimeout(str(exc), headers={FAILURE_HEADER: "timeout"}) from exc
    try:
        return await _stream(response, send)
    finally:
        await response.aclose()


async def _stream(response: TunnelResponse, send: Send) -> bool:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [(ANSWER_HEADER.encode(), encode_answer(response.status, response.headers).encode())],
        }
    )
    try:
        async for chunk in response.aiter_bytes():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TransportUnavailable, TransportTimeout) as exc:
        log.info("a relayed answer broke off: %s", exc)
        return False  # no last chunk: the caller's read fails, as the tunnel's did
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True


route = Route(RELAY_PREFIX + "{provider_id}", RelayEndpoint(), methods=["POST"], include_in_schema=False)
