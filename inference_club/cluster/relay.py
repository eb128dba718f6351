"""Relaying a request to the replica that holds the provider's agent tunnel.

Replica B routes a request to a tunnel provider whose tunnel is held by replica A:
B sends ``POST {A's internal URL}/internal/relay/{provider id}`` with the request body
streamed as is and three headers:

- ``x-ic-relay-head``: the upstream request head (service, model, method, path,
  headers, request id) as base64url JSON;
- ``x-ic-relay-time``: Unix seconds when B signed it;
- ``x-ic-relay-signature``: hex HMAC-SHA256, keyed with ``IC_CLUSTER_SECRET``, of
  ``time``, provider id and head, one per line.

A checks the signature (constant time, within :data:`MAX_SKEW_S` of its clock), sends
the request down its own tunnel and answers with the agent's status, the agent's head
as base64url JSON in ``x-ic-relay-answer`` and the body streamed chunk by chunk. When
A cannot get an answer from the agent it answers without ``x-ic-relay-answer`` and
says why in ``x-ic-relay-failure`` (``unavailable``, ``timeout``, ``bad_head``). An
answer that breaks off after its head ends the HTTP response without its last chunk,
so B's read fails as the tunnel's would have.

B's side is :class:`RelayClient`; A's is ``surfaces/http/internal_relay.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

import httpx
import orjson

from inference_club.domain.providers import ProviderState
from inference_club.errors import InvalidRequest
from inference_club.services.transports.base import (
    BadResponseHead,
    TransportBusy,
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
    check_response_head,
)

if TYPE_CHECKING:  # the receiving side imports this module too, and needs no Redis
    from inference_club.cluster.tunnel_directory import Holder, TunnelDirectory

log = logging.getLogger("inference_club.cluster")

RELAY_PREFIX = "/internal/relay/"
HEAD_HEADER = "x-ic-relay-head"
TIME_HEADER = "x-ic-relay-time"
SIGNATURE_HEADER = "x-ic-relay-signature"
ANSWER_HEADER = "x-ic-relay-answer"
FAILURE_HEADER = "x-ic-relay-failure"
MAX_SKEW_S = 60
"""A signed relay request is accepted this long (seconds) before or after its signing time."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
        "date",
        "server",
    }
)
_MAX_FAILURE_BODY = 4096


# --------------------------------------------------------------------------- signing


class ClusterSigner:
    """Signs and checks replica-to-replica calls with the shared cluster secret."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def __repr__(self) -> str:
        return "<ClusterSigner>"

    def sign(self, provider_id: str, head: str, timestamp: int) -> str:
        message = f"{timestamp}\n{provider_id}\n{head}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def verify(self, provider_id: str, head: str, timestamp: str, signature: str, *, now: float) -> bool:
        if not timestamp.isdigit() or not signature:
            return False
        if abs(now - int(timestamp)) > MAX_SKEW_S:
            return False
        return hmac.compare_digest(self.sign(provider_id, head, int(timestamp)), signature)


# --------------------------------------------------------------------------- heads on the wire


def _b64(data: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode("ascii")


def _unb64(text: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return None


def encode_head(request: UpstreamRequest) -> str:
    return _b64(
        {
            "service_type": request.service_type,
            "model": request.model,
            "method": request.method,
            "path": request.path,
            "headers": request.headers,
            "request_id": request.request_id,
        }
    )


@dataclass(frozen=True, slots=True)
class RelayedHead:
    service_type: str
    model: str
    method: str
    path: str
    headers: dict[str, str]
    request_id: str


def decode_head(text: str) -> RelayedHead:
    data = _unb64(text)
    fields = ("service_type", "model", "method", "path", "request_id")
    if (
        not isinstance(data, dict)
        or not all(isinstance(data.get(f), str) for f in fields)
        or not isinstance(data.get("headers"), dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in data["headers"].items())
    ):
        raise InvalidRequest(f"{HEAD_HEADER} is not a valid relayed request head", param=HEAD_HEADER)
    return RelayedHead(
        service_type=data["service_type"],
        model=data["model"],
        method=data["method"],
        path=data["path"],
        headers=dict(data["headers"]),
        request_id=data["request_id"],
    )


def encode_answer(status: int, headers: list[tuple[str, str]]) -> str:
    return _b64({"status": status, "headers": [[k, v] for k, v in headers]})


def decode_answer(text: str) -> tuple[int, list[tuple[str, str]]] | None:
    data = _unb64(text)
    if not isinstance(data, dict) or not isinstance(data.get("status"), int):
        return None
    raw = data.get("headers")
    if not isinstance(raw, list) or not all(
        isinstance(h, list) and len(h) == 2 and all(isinstance(p, str) for p in h) for h in raw
    ):
        return None
    return data["status"], [(k, v) for k, v in raw]


# --------------------------------------------------------------------------- the sending replica


class RelayedResponse:
    """The agent's answer as the holding replica streams it back."""

    def __init__(self, response: httpx.Response, status: int, headers: list[tuple[str, str]]) -> None:
        self._response = response
        self.status = status
        self.headers = [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP]
        self.agent_error = any(k.lower() == "x-ic-agent-error" and v == "1" for k, v in headers)

    def __repr__(self) -> str:
        return f"<RelayedResponse {self.status} from {self._response.url.host}:{self._response.url.port}>"

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                if chunk:
                    yield chunk
        except httpx.TimeoutException as exc:
            raise TransportTimeout(str(exc) or "the holding replica went silent") from exc
        except httpx.HTTPError as exc:
            raise TransportUnavailable(f"the relayed answer broke off: {exc or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        # An unfinished body closes the connection, which cancels the request on the holder.
        await self._response.aclose()


class RelayClient:
    """Sends a request to a replica holding the provider's tunnel, over the hub's pooled client.

    Routing chose the provider from presence; the directory says where its tunnels are.
    The two are written in that order by the holding replica (claim first), but this
    replica may read them in between: right after an agent connected elsewhere, after
    Redis came back empty, after the holder died and the agent moved. So while
    ``expect_holder(provider id)`` says a tunnel is open elsewhere (presence), a request
    that finds no holder answering waits for one, polling the directory, up to
    ``holder_wait_s``; only then does the provider count as unavailable (failover).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        directory: TunnelDirectory,
        signer: ClusterSigner,
        *,
        expect_holder: Callable[[str], bool] | None = None,
        holder_wait_s: float = 5.0,
        poll_s: float = 0.1,
    ) -> None:
        self._http = http
        self._directory = directory
        self._signer = signer
        self._expect_holder = expect_holder or (lambda _provider_id: False)
        self.holder_wait_s = holder_wait_s
        self._poll_s = poll_s
        self.relayed = 0
        self.waited = 0
        """Requests that found no holder answering at first and waited for one."""

    def __repr__(self) -> str:
        return f"<RelayClient {self._directory.replica_id} relayed={self.relayed}>"

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> RelayedResponse:
        # Redis down: SharedStateUnavailable, answered 503 busy with Retry-After like
        # everything else that needs the shared state.
        failed: set[Holder] = set()
        failures: list[str] = []
        full = 0  # of the failures, holders whose tunnels had no stream to spare
        deadline: float | None = None
        waiting = False
        while True:
            holders = [h for h in await self._directory.holders(provider.id) if h not in failed]
            random.shuffle(holders)
            for holder in holders:
                try:
                    response = await self._send_to(holder, provider, request)
                except BadResponseHead:
                    raise
                except TransportUnavailable as exc:
                    # A replica that died, lost the tunnel since it claimed it or has it full:
                    # try the next one.
                    failed.add(holder)
                    failures.append(f"{holder.replica_id}: {exc}")
                    full += isinstance(exc, TransportBusy)
                    continue
                self.relayed += 1
                return response
            if failures and full == len(failures):  # all there, only full: no use waiting
                raise TransportBusy(f"provider {provider.name!r}: {'; '.join(failures)}")
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.holder_wait_s
            if now >= deadline or not self._expect_holder(provider.id):
                break
            if not waiting:
                waiting = True
                self.waited += 1
            await asyncio.sleep(self._poll_s)
        if not failures:
            raise TransportUnavailable(f"provider {provider.name!r} has no open tunnel")
        raise TransportUnavailable(
            f"provider {provider.name!r}: no replica holding its tunnel answered ({'; '.join(failures)})"
        )

    async def _send_to(
        self, holder: Holder, provider: ProviderState, request: UpstreamRequest
    ) -> RelayedResponse:
        head = encode_head(request)
        now = int(time.time())
        headers = {
            HEAD_HEADER: head,
            TIME_HEADER: str(now),
            SIGNATURE_HEADER: self._signer.sign(provider.id, head, now),
            "content-type": "application/octet-stream",
            "x-request-id": request.request_id,
        }
        url = f"{holder.url}{RELAY_PREFIX}{quote(provider.id, safe='')}"
        built = self._http.build_request("POST", url, headers=headers, content=request.body())
        try:
            response = await self._http.send(built, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransportUnavailable(
                f"replica {holder.replica_id} at {holder.url} unreachable: {type(exc).__name__}"
            ) from exc
        except httpx.TimeoutException as exc:
            raise TransportTimeout(
                f"provider {provider.name!r} did not answer in time (through replica {holder.replica_id})"
            ) from exc
        except httpx.HTTPError as exc:
            raise TransportUnavailable(f"replica {holder.replica_id}: {exc!r}") from exc
        answer = decode_answer(response.headers.get(ANSWER_HEADER, ""))
        if answer is None:
            await self._refused(holder, response)
        status, answer_headers = answer
        try:
            check_response_head(provider.name, status, answer_headers)
        except BadResponseHead:
            await response.aclose()
            raise
        return RelayedResponse(response, status, answer_headers)

    async def _refused(self, holder: Holder, response: httpx.Response) -> NoReturn:
        """The holder answered without the agent's answer: raise what it says went wrong."""
        failure = response.headers.get(FAILURE_HEADER, "")
        detail = b""
        try:
            async for chunk in response.aiter_raw():
                detail += chunk
                if len(detail) >= _MAX_FAILURE_BODY:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        message = _error_message(detail) or f"HTTP {response.status_code}"
        if failure == "timeout":
            raise TransportTimeout(message)
        if failure == "bad_head":
            raise BadResponseHead(message)
        if failure == "busy":
            raise TransportBusy(message)
        if not failure:
            # Not a relay answer at all: a wrong secret, a replica without relaying, a wrong URL.
            log.warning(
                "replica %s at %s refused a relayed request: %s", holder.replica_id, holder.url, message
            )
        raise TransportUnavailable(f"replica {holder.replica_id}: {message}")


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else ""
