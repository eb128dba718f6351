"""The relay between replicas: signatures, the heads carried in headers, and the sending side
(``RelayClient``) against a real HTTP server playing the holding replica.

The directory of tunnel holders is a fixed list here: which replica holds a tunnel is the
directory's business, tested with it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from inference_club.cluster.relay import (
    ANSWER_HEADER,
    FAILURE_HEADER,
    HEAD_HEADER,
    MAX_SKEW_S,
    SIGNATURE_HEADER,
    TIME_HEADER,
    ClusterSigner,
    RelayClient,
    decode_answer,
    decode_head,
    encode_answer,
    encode_head,
)
from inference_club.cluster.tunnel_directory import Holder
from inference_club.domain.providers import ProviderState
from inference_club.errors import InvalidRequest
from inference_club.services.transports.base import (
    BadResponseHead,
    TransportBusy,
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
)
from inference_club.testing.servers import free_port, serve_app
from inference_club.testing.tcp_proxy import TcpProxy

# The sending side's tests share one event loop: the holding replica's server starts once.
in_module_loop = pytest.mark.asyncio(loop_scope="module")

SECRET = "a-cluster-secret-of-enough-length-000"
NOW = 1_800_000_000


async def _empty() -> AsyncIterator[bytes]:
    yield b""


def _request(**changes: object) -> UpstreamRequest:
    values: dict[str, object] = {
        "service_type": "llm",
        "model": "mödel/ünïcode",
        "method": "POST",
        "path": "/v1/chat/completions?x=1",
        "headers": {"content-type": "application/json", "x-note": "café"},
        "body": _empty,
        "request_id": "req_1",
    }
    values.update(changes)
    return UpstreamRequest(**values)  # type: ignore[arg-type]


def test_a_signature_verifies_only_with_the_same_secret_provider_head_and_time() -> None:
    signer = ClusterSigner(SECRET)
    head = encode_head(_request())
    signature = signer.sign("prov_1", head, NOW)
    assert signer.verify("prov_1", head, str(NOW), signature, now=NOW)
    assert not ClusterSigner(SECRET + "x").verify("prov_1", head, str(NOW), signature, now=NOW)
    assert not signer.verify("prov_2", head, str(NOW), signature, now=NOW)
    assert not signer.verify(
        "prov_1", encode_head(_request(path="/v1/embeddings")), str(NOW), signature, now=NOW
    )
    assert not signer.verify("prov_1", head, str(NOW + 1), signature, now=NOW)
    assert not signer.verify("prov_1", head, str(NOW), "", now=NOW)
    assert not signer.verify("prov_1", head, "", signature, now=NOW)
    assert not signer.verify("prov_1", head, "-5", signature, now=NOW)


@pytest.mark.parametrize("offset", [-MAX_SKEW_S, MAX_SKEW_S])
def test_a_signature_holds_within_the_allowed_clock_skew(offset: int) -> None:
    signer = ClusterSigner(SECRET)
    head = encode_head(_request())
    assert signer.verify("p", head, str(NOW), signer.sign("p", head, NOW), now=NOW + offset)


@pytest.mark.parametrize("offset", [-MAX_SKEW_S - 1, MAX_SKEW_S + 1, 3600])
def test_an_old_or_future_signature_is_refused(offset: int) -> None:
    signer = ClusterSigner(SECRET)
    head = encode_head(_request())
    assert not signer.verify("p", head, str(NOW), signer.sign("p", head, NOW), now=NOW + offset)


def test_the_head_survives_the_trip_with_any_text() -> None:
    request = _request()
    head = decode_head(encode_head(request))
    assert (head.service_type, head.model, head.method, head.path, head.headers, head.request_id) == (
        request.service_type,
        request.model,
        request.method,
        request.path,
        request.headers,
        request.request_id,
    )
    assert encode_head(request).isascii()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64 !!",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b'{"service_type": "llm"}').decode(),
        base64.urlsafe_b64encode(
            b'{"service_type": "llm", "model": "m", "method": "POST", "path": "/", '
            b'"request_id": "r", "headers": {"a": 1}}'
        ).decode(),
    ],
)
def test_a_malformed_head_is_a_400_naming_the_header(text: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode_head(text)
    assert caught.value.param == HEAD_HEADER


def test_the_answer_head_keeps_order_and_repeats() -> None:
    headers = [
        ("content-type", "text/event-stream"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("x-n", "ü"),
    ]
    assert decode_answer(encode_answer(201, headers)) == (201, headers)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "%%%",
        base64.urlsafe_b64encode(b'{"status": "200", "headers": []}').decode(),
        base64.urlsafe_b64encode(b'{"status": 200, "headers": [["a"]]}').decode(),
    ],
)
def test_a_malformed_answer_head_is_no_answer(text: str) -> None:
    assert decode_answer(text) is None


# --------------------------------------------------------------------------- the sending replica

PROVIDER_ID = "prov/1 ü"  # quoted into the URL path


@dataclass
class Directory:
    """The holders of each provider's tunnel, as the tunnel directory would answer them."""

    holders_by_provider: dict[str, list[Holder]] = field(default_factory=dict)
    replica_id: str = "replica-b"

    async def holders(self, provider_id: str) -> list[Holder]:
        return list(self.holders_by_provider.get(provider_id, []))


@dataclass
class HoldingReplica:
    """What the holding replica saw; how it answers is chosen by the first path segment
    of the holder's URL (one server plays every kind of holder)."""

    base_url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)

    def holder(self, mode: str, replica_id: str = "replica-a") -> Holder:
        return Holder(replica_id, f"{self.base_url}/{mode}")

    async def relay(self, request: Request) -> Response:
        mode = request.path_params["mode"]
        body = await request.body()
        self.seen.append(
            {
                "path": request.url.path,
                "raw_path": request.scope["raw_path"],
                "headers": request.headers,
                "body": body,
            }
        )
        if mode == "answer":
            head = encode_answer(
                201,
                [
                    ("content-type", "text/plain"),
                    ("x-engine", "e1"),
                    ("set-cookie", "a=1"),
                    ("set-cookie", "b=2"),
                    ("keep-alive", "timeout=5"),
                    ("content-length", "999"),
                    ("x-ic-agent-error", "1"),
                ],
            )

            async def chunks() -> AsyncIterator[bytes]:
                yield b"got:"
                yield body

            return StreamingResponse(chunks(), status_code=201, headers={ANSWER_HEADER: head})
        if mode == "breaks_off":

            async def broken() -> AsyncIterator[bytes]:
                yield b"first part"
                raise RuntimeError("the tunnel broke mid-answer")

            head = encode_answer(200, [("content-type", "text/plain")])
            return StreamingResponse(broken(), headers={ANSWER_HEADER: head})
        if mode == "informational":
            return Response(b"", headers={ANSWER_HEADER: encode_answer(101, [])})
        if mode == "not_a_relay":
            return Response(b"<html>no such route</html>", status_code=404)
        # An answer without the agent's: the failure header says why, the body says more.
        error = {"error": {"message": f"agent said: {mode}"}}
        return JSONResponse(error, status_code=502, headers={FAILURE_HEADER: mode})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def serving() -> AsyncIterator[HoldingReplica]:
    replica = HoldingReplica()
    app = Starlette(routes=[Route("/{mode}/internal/relay/{provider:path}", replica.relay, methods=["POST"])])
    async with serve_app(app) as url:
        replica.base_url = url
        yield replica


@pytest.fixture
def holding(serving: HoldingReplica) -> HoldingReplica:
    serving.seen.clear()
    return serving


def provider() -> ProviderState:
    return ProviderState(
        id=PROVIDER_ID,
        user_id="u",
        name="rig",
        transport="tunnel",
        callback_url=None,
        visibility="private",
        agent_secret="s",
        services=[],
        last_seen=time.time(),
        created=0,
    )


async def _body() -> AsyncIterator[bytes]:
    yield b'{"model": '
    yield b'"m"}'


@asynccontextmanager
async def client(*holders: Holder, read_timeout_s: float = 10) -> AsyncIterator[RelayClient]:
    directory = Directory({PROVIDER_ID: list(holders)})
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=read_timeout_s)) as http:
        yield RelayClient(http, directory, ClusterSigner(SECRET))  # type: ignore[arg-type]


async def read_all(response: Any) -> bytes:
    return b"".join([chunk async for chunk in response.aiter_bytes()])


@in_module_loop
async def test_a_relayed_request_is_signed_and_its_answer_streamed_back(holding: HoldingReplica) -> None:
    async with client(holding.holder("answer")) as relay:
        request = _request(body=_body)
        response = await relay.send(provider(), request)
        try:
            assert response.status == 201
            # The agent's head, less what describes the connection between the replicas.
            assert response.headers == [
                ("content-type", "text/plain"),
                ("x-engine", "e1"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-ic-agent-error", "1"),
            ]
            assert response.agent_error
            assert await read_all(response) == b'got:{"model": "m"}'
        finally:
            await response.aclose()
        assert relay.relayed == 1
    (seen,) = holding.seen
    assert seen["raw_path"] == b"/answer/internal/relay/prov%2F1%20%C3%BC"
    assert seen["body"] == b'{"model": "m"}'
    headers = seen["headers"]
    assert headers["x-request-id"] == "req_1"
    assert decode_head(headers[HEAD_HEADER]).path == "/v1/chat/completions?x=1"
    assert ClusterSigner(SECRET).verify(
        PROVIDER_ID, headers[HEAD_HEADER], headers[TIME_HEADER], headers[SIGNATURE_HEADER], now=time.time()
    )


@in_module_loop
@pytest.mark.parametrize(
    ("failure", "error"),
    [
        ("timeout", TransportTimeout),
        ("bad_head", BadResponseHead),
        ("unavailable", TransportUnavailable),
        ("busy", TransportBusy),
    ],
)
async def test_a_holders_failure_header_becomes_the_transport_error(
    holding: HoldingReplica, failure: str, error: type[Exception]
) -> None:
    async with client(holding.holder(failure)) as relay:
        with pytest.raises(error) as caught:
            await relay.send(provider(), _request())
        assert f"agent said: {failure}" in str(caught.value)
        assert relay.relayed == 0


@in_module_loop
async def test_an_answer_that_is_no_relay_answer_is_unavailable_with_its_status(
    holding: HoldingReplica,
) -> None:
    async with client(holding.holder("not_a_relay")) as relay:
        with pytest.raises(TransportUnavailable, match="replica-a: HTTP 404") as caught:
            await relay.send(provider(), _request())
        assert type(caught.value) is TransportUnavailable


@in_module_loop
async def test_an_agent_head_that_cannot_be_relayed_is_refused(holding: HoldingReplica) -> None:
    async with client(holding.holder("informational")) as relay:
        with pytest.raises(BadResponseHead, match="status 101"):
            await relay.send(provider(), _request())


@in_module_loop
async def test_an_answer_breaking_off_fails_the_read_as_a_tunnel_would(holding: HoldingReplica) -> None:
    async with client(holding.holder("breaks_off")) as relay:
        response = await relay.send(provider(), _request())
        received = b""
        with pytest.raises(TransportUnavailable, match="broke off"):
            async for chunk in response.aiter_bytes():
                received += chunk
        await response.aclose()
        assert received == b"first part"


@in_module_loop
async def test_an_unreachable_holder_is_skipped_for_the_next(holding: HoldingReplica) -> None:
    dead = Holder("replica-dead", f"http://127.0.0.1:{free_port()}")
    async with client(dead, holding.holder("answer")) as relay:
        for _ in range(4):  # the order is shuffled: either way the live one answers
            response = await relay.send(provider(), _request())
            await response.aclose()
        assert relay.relayed == 4 and len(holding.seen) == 4


@in_module_loop
async def test_when_no_holder_answers_each_one_is_named(holding: HoldingReplica) -> None:
    dead = Holder("replica-dead", f"http://127.0.0.1:{free_port()}")
    async with client(dead, holding.holder("unavailable")) as relay:
        with pytest.raises(TransportUnavailable) as caught:
            await relay.send(provider(), _request())
    message = str(caught.value)
    assert "no replica holding its tunnel answered" in message
    assert "replica-dead: " in message and "replica-a: agent said: unavailable" in message


@in_module_loop
async def test_holders_that_are_all_full_make_the_request_busy_at_once(holding: HoldingReplica) -> None:
    """No waiting for another holder (as for holders that failed): they are there, only full.
    With one holder failing besides, the request is unavailable, as the router fails it."""
    both_full = Directory(
        {PROVIDER_ID: [holding.holder("busy", "replica-a"), holding.holder("busy", "replica-c")]}
    )
    one_failing = Directory(
        {PROVIDER_ID: [holding.holder("busy", "replica-a"), holding.holder("unavailable", "replica-c")]}
    )
    async with httpx.AsyncClient(timeout=10) as http:
        relay = RelayClient(http, both_full, ClusterSigner(SECRET), expect_holder=lambda _: True)  # type: ignore[arg-type]
        with pytest.raises(TransportBusy) as caught:
            await relay.send(provider(), _request())
        assert "replica-a: agent said: busy" in str(caught.value) and "replica-c" in str(caught.value)
        assert relay.waited == 0
        relay = RelayClient(http, one_failing, ClusterSigner(SECRET), holder_wait_s=0.1)  # type: ignore[arg-type]
        with pytest.raises(TransportUnavailable) as failed:
            await relay.send(provider(), _request())
        assert type(failed.value) is TransportUnavailable


@in_module_loop
async def test_a_provider_without_holders_is_unavailable() -> None:
    async with client() as relay:
        with pytest.raises(TransportUnavailable, match="'rig' has no open tunnel"):
            await relay.send(provider(), _request())


@in_module_loop
async def test_a_silent_holder_is_a_timeout() -> None:
    async with TcpProxy("127.0.0.1", free_port()) as silent:
        await silent.set_mode("blackhole")  # accepts, never answers
        async with client(Holder("replica-a", f"http://{silent.address}"), read_timeout_s=0.2) as relay:
            with pytest.raises(TransportTimeout, match="through replica replica-a"):
                async with asyncio.timeout(10):
                    await relay.send(provider(), _request())
