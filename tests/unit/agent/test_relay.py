from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from inference_club.agent.discovery import Catalog
from inference_club.agent.relay import AGENT_ERROR_HEADER, Relay, make_engine_client
from inference_club.testing.servers import serve_app
from tests.polling import eventually

from .stubs import EngineStub, make_config


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


def relay_for(base: str, *, models: list[str] | None = None, **service: object) -> Relay:
    config = make_config(
        [{"type": "llm", "url": f"{base}/v1", "models": [{"id": m} for m in models or ["m1"]], **service}]
    )
    return Relay(Catalog(config.services))


async def read_all(response: object) -> bytes:
    out = b""
    async for chunk in response.aiter_bytes():  # type: ignore[attr-defined]
        out += chunk
    return out


async def test_stream_is_relayed_chunk_by_chunk(
    engine_stub: tuple[EngineStub, str],
) -> None:
    stub, base = engine_stub
    relay = relay_for(base)
    try:
        response = await relay.open(
            service_type="llm",
            model="m1",
            method="POST",
            path="/v1/stream",
            headers={"content-type": "application/json"},
            body=chunks(b'{"stream": true}'),
        )
        assert response.status == 200
        assert ("content-type", "text/event-stream") in response.headers
        it = response.aiter_bytes()
        async with asyncio.timeout(2):  # the engine has not finished
            first = await it.__anext__()
        assert first == b"data: one\n\n"
        assert not stub.release.is_set()
        stub.release.set()
        rest = b"".join([c async for c in it])
        assert rest == b"data: two\n\ndata: [DONE]\n\n"
        assert response.closed
        assert relay.in_flight == 0
    finally:
        await relay.aclose()


async def test_multipart_body_is_forwarded_intact(engine_stub: tuple[EngineStub, str]) -> None:
    stub, base = engine_stub
    relay = relay_for(base, models=["whisper"], type="stt")
    audio = bytes(range(256)) * 400
    request = httpx.Request(
        "POST",
        "http://x/",
        data={"model": "whisper", "response_format": "json"},
        files={"file": ("clip.wav", audio, "audio/wav")},
    )
    raw = request.read()
    content_type = request.headers["content-type"]
    pieces = [raw[i : i + 7000] for i in range(0, len(raw), 7000)]
    try:
        response = await relay.open(
            service_type="stt",
            model="whisper",
            method="POST",
            path="/v1/audio/transcriptions",
            headers={
                "Content-Type": content_type,
                "content-length": str(len(raw)),
                "x-request-id": "req-1",
                "x-ic-agent-secret": "must-not-leak",
                "x-ic-model": "whisper",
                "authorization": "Bearer hub-key",
            },
            body=chunks(*pieces),
        )
        echo = json.loads(await read_all(response))
    finally:
        await relay.aclose()
    assert response.status == 200
    assert echo["path"] == "/v1/audio/transcriptions"
    assert echo["sha256"] == hashlib.sha256(raw).hexdigest()
    assert echo["headers"]["content-type"] == content_type
    assert echo["headers"]["content-length"] == str(len(raw))
    assert "x-request-id" not in echo["headers"]  # engines may insist on UUIDs
    for leaked in ("x-ic-agent-secret", "x-ic-model", "authorization"):
        assert leaked not in echo["headers"]
    assert stub.requests[-1]["body"] == raw


async def test_chunked_body_without_length_and_query_string(
    engine_stub: tuple[EngineStub, str],
) -> None:
    stub, base = engine_stub
    relay = relay_for(base, models=["k"], type="tts", api_key="engine-key")
    try:
        r1 = await relay.open(
            service_type="tts",
            model="k",
            method="POST",
            path="/v1/audio/speech",
            headers={"content-type": "application/json"},
            body=chunks(b'{"input":', b' "hi"}'),
        )
        e1 = json.loads(await read_all(r1))
        r2 = await relay.open(
            service_type="tts",
            model="k",
            method="GET",
            path="/v1/audio/voices?model=k&x=%20y",
            headers={},
            body=chunks(),
        )
        e2 = json.loads(await read_all(r2))
    finally:
        await relay.aclose()
    assert e1["sha256"] == hashlib.sha256(b'{"input": "hi"}').hexdigest()
    assert e1["headers"]["authorization"] == "Bearer engine-key"
    assert (e2["method"], e2["path"], e2["query"]) == ("GET", "/v1/audio/voices", "model=k&x=%20y")
    assert "transfer-encoding" not in e2["headers"]
    assert stub.requests[-1]["body"] == b""


async def test_engine_error_is_relayed_unchanged(engine_stub: tuple[EngineStub, str]) -> None:
    _, base = engine_stub
    relay = relay_for(base)
    try:
        async with await relay.open(
            service_type="llm",
            model="m1",
            method="POST",
            path="/v1/bad",
            headers={"content-type": "application/json"},
            body=chunks(b"{}"),
        ) as response:
            body = await read_all(response)
    finally:
        await relay.aclose()
    assert response.status == 400
    assert not response.agent_error
    assert ("x-engine", "yes") in response.headers
    assert json.loads(body) == {"error": {"message": "temperature too high", "type": "invalid_request_error"}}


async def test_engine_down_is_502_agent_error() -> None:
    relay = relay_for("http://127.0.0.1:9")
    try:
        response = await relay.open(
            service_type="llm",
            model="m1",
            method="POST",
            path="/v1/chat/completions",
            headers={"content-type": "application/json"},
            body=chunks(b"{}"),
        )
        body = json.loads(await read_all(response))
    finally:
        await relay.aclose()
    assert response.status == 502
    assert (AGENT_ERROR_HEADER, "1") in response.headers
    assert body["error"]["type"] == "upstream_error"
    assert relay.in_flight == 0


async def test_engine_timeout_is_504_agent_error(engine_stub: tuple[EngineStub, str]) -> None:
    _, base = engine_stub
    config = make_config([{"type": "llm", "url": f"{base}/v1", "models": [{"id": "m1"}]}])
    client = make_engine_client(request_timeout_s=0.3)
    relay = Relay(Catalog(config.services), client)
    try:
        response = await relay.open(
            service_type="llm",
            model="m1",
            method="POST",
            path="/v1/slow",
            headers={},
            body=chunks(b"{}"),
        )
        body = json.loads(await read_all(response))
    finally:
        await client.aclose()
    assert response.status == 504
    assert response.agent_error
    assert body["error"]["type"] == "upstream_error"


BAD_PATHS = (
    "/v1/../admin",
    "/v1/./models",
    "/v1/models/..",
    "/v1/models/.",
    "/v2/models",
    "/v1x",
    "v1/models",
    "/v1/mo dels",
    "/v1/models\tx",
    "/v1/models\x00",
    "/v1/models\x7f",
    "/v1/models#frag",
    "/v1/models?q=a b",
    "/v1/models?q=#",
)
GOOD_PATHS = ("/v1", "/v1/models", "/v1/.well-known/x", "/v1/a..b/c.d", "/v1/models?q=../x", "/v1/modèles")


async def test_a_path_is_checked_before_anything_is_sent(engine_stub: tuple[EngineStub, str]) -> None:
    stub, base = engine_stub
    relay = relay_for(base)
    try:
        for path in GOOD_PATHS:
            response = await relay.open(
                service_type="llm", model="m1", method="GET", path=path, headers={}, body=chunks()
            )
            assert not response.agent_error, path  # on to the engine, whatever it answers
            await response.aclose()
    finally:
        await relay.aclose()
    assert len(stub.requests) == len(GOOD_PATHS)


async def test_unknown_model_or_type_is_404_no_provider(
    engine_stub: tuple[EngineStub, str],
) -> None:
    stub, base = engine_stub
    relay = relay_for(base)
    try:
        for service_type, model in (("llm", "nope"), ("tts", "m1")):
            response = await relay.open(
                service_type=service_type,
                model=model,
                method="POST",
                path="/v1/chat/completions",
                headers={},
                body=chunks(b"{}"),
            )
            body = json.loads(await read_all(response))
            assert response.status == 404
            assert response.agent_error
            assert body["error"]["type"] == "no_provider"
        for path in BAD_PATHS:
            bad = await relay.open(
                service_type="llm", model="m1", method="GET", path=path, headers={}, body=chunks()
            )
            assert (bad.status, bad.agent_error) == (400, True), path
            await bad.aclose()
    finally:
        await relay.aclose()
    assert stub.requests == []


async def test_least_loaded_service_is_picked() -> None:
    one, two = EngineStub(), EngineStub()
    async with serve_app(one) as base1, serve_app(two) as base2:
        config = make_config(
            [
                {"type": "llm", "url": f"{base1}/v1", "models": [{"id": "m1"}]},
                {"type": "llm", "url": f"{base2}/v1", "models": [{"id": "m1"}]},
            ]
        )
        relay = Relay(Catalog(config.services))
        try:
            held = await relay.open(
                service_type="llm",
                model="m1",
                method="POST",
                path="/v1/stream",
                headers={},
                body=chunks(b"{}"),
            )
            assert [s.in_flight for s in relay.catalog.services] == [1, 0]
            second = await relay.open(
                service_type="llm",
                model="m1",
                method="POST",
                path="/v1/echo",
                headers={},
                body=chunks(b"{}"),
            )
            await read_all(second)
            assert len(two.requests) == 1 and two.requests[0]["path"] == "/v1/echo"
            await held.aclose()
            assert relay.in_flight == 0
            assert await relay.drain(0.1)
        finally:
            one.release.set()
            await relay.aclose()


async def test_aclose_aborts_a_hanging_engine(engine_stub: tuple[EngineStub, str]) -> None:
    stub, base = engine_stub
    relay = relay_for(base)
    try:
        task = asyncio.create_task(
            relay.open(
                service_type="llm",
                model="m1",
                method="POST",
                path="/v1/hang",
                headers={},
                body=chunks(b"{}"),
            )
        )
        async with asyncio.timeout(2):
            await stub.got_request.wait()
        assert relay.in_flight == 1
        cancelled_at = time.monotonic()
        task.cancel()
        async with asyncio.timeout(2):
            await stub.disconnected.wait()
        assert stub.disconnected_at is not None
        assert stub.disconnected_at - cancelled_at < 2
        assert relay.in_flight == 0
    finally:
        await relay.aclose()


async def test_the_engine_client_opens_no_more_connections_than_its_limit() -> None:
    release = asyncio.Event()
    held = 0

    async def hold(scope: Any, receive: Any, send: Any) -> None:
        nonlocal held
        if scope["type"] != "http":
            return
        held += 1
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    client = make_engine_client(max_connections=2)
    try:
        async with serve_app(hold) as base:
            calls = [asyncio.create_task(client.get(base + "/")) for _ in range(3)]
            await eventually(lambda: held == 2)
            await asyncio.sleep(0.1)
            assert held == 2  # the third waits for a connection
            release.set()
            assert [(await call).status_code for call in calls] == [200, 200, 200]
            assert held == 3
    finally:
        await client.aclose()


class _Answer:
    """An engine answer whose body parts come one at a time, each when released."""

    def __init__(self, parts: list[bytes | Exception]) -> None:
        self.status_code = 200
        self.headers = httpx.Headers()
        self.parts = parts
        self.taken = 0
        self.closed = False

    async def _body(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            await asyncio.sleep(0)
            self.taken += 1
            if isinstance(part, Exception):
                raise part
            yield part

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._body()

    async def aclose(self) -> None:
        self.closed = True


def _answer_with(parts: list[bytes | Exception], headers: list[tuple[str, str]]) -> tuple[Any, _Answer]:
    from inference_club.agent.relay import RelayResponse

    upstream = _Answer(parts)
    return RelayResponse(200, headers, upstream=upstream), upstream


async def test_an_answer_with_a_length_has_its_first_bytes_read_before_its_head_goes_on() -> None:
    response, upstream = _answer_with([b"", b'{"a":', b"1}"], [("content-length", "6")])
    await response.read_lead()
    assert upstream.taken == 2  # an empty read passed over, the first bytes in hand
    assert await read_all(response) == b'{"a":1}'
    assert upstream.closed


async def test_a_stream_or_an_empty_answer_goes_on_with_nothing_read() -> None:
    for headers in ([("content-type", "text/event-stream")], [("content-length", "0")]):
        response, upstream = _answer_with([b"data: 1\n\n"], headers)
        await response.read_lead()
        assert upstream.taken == 0
        assert await read_all(response) == b"data: 1\n\n"


async def test_an_answer_that_breaks_off_before_its_first_bytes_fails_after_its_head() -> None:
    from inference_club.agent.relay import RelayStreamError

    response, upstream = _answer_with([httpx.ReadError("reset")], [("content-length", "10")])
    await response.read_lead()  # the head still goes on: the failure comes with the body
    try:
        await read_all(response)
    except RelayStreamError as exc:
        assert "broke off" in str(exc)
        assert isinstance(exc.__cause__, httpx.ReadError)
    else:
        raise AssertionError("the broken answer read as complete")
    assert upstream.closed
