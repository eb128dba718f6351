from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from inference_club.agent.direct import DirectServer, SecretBox
from inference_club.agent.discovery import Catalog
from inference_club.agent.relay import Relay

from .stubs import EngineStub, make_config

SECRET = "agent-secret-1"


@pytest.fixture
async def agent(engine_stub: tuple[EngineStub, str]) -> AsyncIterator[tuple[DirectServer, Relay]]:
    _, base = engine_stub
    config = make_config(
        [
            {"type": "llm", "url": f"{base}/v1", "models": [{"id": "m1"}]},
            {"type": "tts", "url": f"{base}/v1", "models": [{"id": "voice"}]},
            {"type": "image", "url": "http://127.0.0.1:9/v1", "models": [{"id": "sd"}]},
        ]
    )
    relay = Relay(Catalog(config.services))
    server = DirectServer(relay, SecretBox(SECRET), host="127.0.0.1", port=0, shutdown_grace_s=1)
    await server.start()
    try:
        yield server, relay
    finally:
        await server.stop()
        await relay.aclose()


def hdrs(model: str = "m1", secret: str | None = SECRET, **extra: str) -> dict[str, str]:
    out = {"x-ic-model": model, "x-request-id": "req-7", **extra}
    if secret is not None:
        out["x-ic-agent-secret"] = secret
    return out


async def test_healthz_and_unknown_paths(agent: tuple[DirectServer, Relay]) -> None:
    server, _ = agent
    assert server.callback_url == f"http://127.0.0.1:{server.bound_port}"
    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        ok = await client.get("/healthz")
        assert (ok.status_code, ok.json()) == (200, {"status": "ok"})
        missing = await client.get("/nope")
        assert missing.status_code == 404 and "detail" in missing.json()


async def test_secret_is_required(
    agent: tuple[DirectServer, Relay], engine_stub: tuple[EngineStub, str]
) -> None:
    server, _ = agent
    stub, _ = engine_stub
    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        for headers in (hdrs(secret=None), hdrs(secret="wrong"), hdrs(secret=SECRET + "x")):
            r = await client.post("/relay/llm/v1/chat/completions", headers=headers, content=b"{}")
            assert r.status_code == 401
            assert set(r.json()) == {"detail"}
    assert stub.requests == []


async def test_relays_with_the_current_secret_and_accepts_rotation(
    agent: tuple[DirectServer, Relay], engine_stub: tuple[EngineStub, str]
) -> None:
    server, _ = agent
    stub, _ = engine_stub
    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        r = await client.post(
            "/relay/llm/v1/chat/completions",
            headers=hdrs(**{"content-type": "application/json"}),
            content=b'{"model":"m1"}',
        )
        assert r.status_code == 200, r.text
        echo = r.json()
        assert echo["path"] == "/v1/chat/completions"
        assert "x-request-id" not in echo["headers"]  # engines may insist on UUIDs
        assert "x-ic-agent-secret" not in echo["headers"]

        voices = await client.get("/relay/tts/v1/audio/voices?model=voice", headers=hdrs("voice"))
        assert voices.json()["query"] == "model=voice"

        server.app.secrets.set("rotated")
        old = await client.post("/relay/llm/v1/chat/completions", headers=hdrs(), content=b"{}")
        assert old.status_code == 401
        new = await client.post(
            "/relay/llm/v1/chat/completions", headers=hdrs(secret="rotated"), content=b"{}"
        )
        assert new.status_code == 200
    assert len(stub.requests) == 3


async def test_a_body_whole_or_in_pieces_reaches_the_engine_as_sent(
    agent: tuple[DirectServer, Relay], engine_stub: tuple[EngineStub, str]
) -> None:
    server, _ = agent
    stub, _ = engine_stub

    async def pieces() -> AsyncIterator[bytes]:
        for part in (b'{"model":', b' "m1", ', '"input": "été"}'.encode()):
            yield part
            await asyncio.sleep(0.05)  # each its own chunk on the wire

    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        whole = await client.post("/relay/llm/v1/embeddings", headers=hdrs(), content=b'{"model":"m1"}')
        streamed = await client.post("/relay/llm/v1/embeddings", headers=hdrs(), content=pieces())
        empty = await client.get("/relay/tts/v1/audio/voices?model=voice", headers=hdrs("voice"))
    assert whole.status_code == streamed.status_code == empty.status_code == 200
    first, second, third = stub.requests
    assert first["body"] == b'{"model":"m1"}' and first["headers"]["content-length"] == "14"
    assert second["body"] == '{"model": "m1", "input": "été"}'.encode()
    assert second["headers"]["transfer-encoding"] == "chunked"
    assert third["body"] == b"" and "content-length" not in third["headers"]
    assert "transfer-encoding" not in third["headers"]


async def test_no_secret_yet_refuses_everything(engine_stub: tuple[EngineStub, str]) -> None:
    _, base = engine_stub
    config = make_config([{"type": "llm", "url": f"{base}/v1", "models": [{"id": "m1"}]}])
    relay = Relay(Catalog(config.services))
    server = DirectServer(relay, SecretBox(), port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
            r = await client.post("/relay/llm/v1/x", headers=hdrs(secret=""), content=b"{}")
            assert r.status_code == 401
            assert "no secret" in r.json()["detail"]
    finally:
        await server.stop()
        await relay.aclose()


async def test_agent_errors_are_marked(agent: tuple[DirectServer, Relay]) -> None:
    server, _ = agent
    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        no_model = await client.post(
            "/relay/llm/v1/chat/completions",
            headers={"x-ic-agent-secret": SECRET},
            content=b"{}",
        )
        unknown = await client.post("/relay/llm/v1/chat/completions", headers=hdrs("other"), content=b"{}")
        down = await client.post("/relay/image/v1/images/generations", headers=hdrs("sd"), content=b"{}")
        engine_400 = await client.post("/relay/llm/v1/bad", headers=hdrs(), content=b"{}")
    assert (no_model.status_code, no_model.headers.get("x-ic-agent-error")) == (400, "1")
    assert (unknown.status_code, unknown.headers.get("x-ic-agent-error")) == (404, "1")
    assert unknown.json()["error"]["type"] == "no_provider"
    assert (down.status_code, down.headers.get("x-ic-agent-error")) == (502, "1")
    assert down.json()["error"]["type"] == "upstream_error"
    assert engine_400.status_code == 400
    assert "x-ic-agent-error" not in engine_400.headers
    assert engine_400.headers["x-engine"] == "yes"


async def test_stream_passes_through_unbuffered(
    agent: tuple[DirectServer, Relay], engine_stub: tuple[EngineStub, str]
) -> None:
    server, _ = agent
    stub, _ = engine_stub
    async with (
        httpx.AsyncClient(base_url=server.callback_url or "") as client,
        client.stream("POST", "/relay/llm/v1/stream", headers=hdrs(), content=b"{}") as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        it = r.aiter_raw()
        async with asyncio.timeout(2):
            first = await it.__anext__()
        assert first == b"data: one\n\n"
        stub.release.set()
        rest = b"".join([c async for c in it])
    assert rest == b"data: two\n\ndata: [DONE]\n\n"


async def test_engine_breaking_mid_stream_is_not_a_complete_answer(
    agent: tuple[DirectServer, Relay],
) -> None:
    server, relay = agent
    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/relay/llm/v1/break", headers=hdrs(), content=b"{}") as r:
                assert r.status_code == 200
                async for _ in r.aiter_raw():
                    pass
    await wait_idle(relay)


async def wait_idle(relay: Relay) -> None:
    assert await relay.drain(2), "the relay kept a request in flight"


@pytest.mark.parametrize("route", ["/v1/hang", "/v1/stall"])
async def test_hub_disconnect_aborts_the_engine_request(
    agent: tuple[DirectServer, Relay], engine_stub: tuple[EngineStub, str], route: str
) -> None:
    """The engine is silent (before its first byte, or between chunks) when the hub leaves."""
    server, relay = agent
    stub, _ = engine_stub

    async def call(client: httpx.AsyncClient) -> None:
        async with client.stream("POST", f"/relay/llm{route}", headers=hdrs(), content=b"{}") as r:
            async for _ in r.aiter_raw():
                pass

    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        task = asyncio.create_task(call(client))
        async with asyncio.timeout(2):
            await stub.got_request.wait()
        await asyncio.sleep(0.1)  # the engine is now silent
        left_at = time.monotonic()
        task.cancel()
        async with asyncio.timeout(3):
            await stub.disconnected.wait()
    assert stub.disconnected_at is not None
    assert stub.disconnected_at - left_at < 2
    await wait_idle(relay)


async def test_stop_lets_running_requests_finish(
    agent: tuple[DirectServer, Relay], engine_stub: tuple[EngineStub, str]
) -> None:
    server, _ = agent
    stub, _ = engine_stub
    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        async with client.stream("POST", "/relay/llm/v1/stream", headers=hdrs(), content=b"{}") as r:
            it = r.aiter_raw()
            await it.__anext__()
            stopping = asyncio.create_task(server.stop())
            await asyncio.sleep(0.2)
            assert not stopping.done()
            stub.release.set()
            rest = b"".join([c async for c in it])
        async with asyncio.timeout(3):
            await stopping
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_stop_aborts_requests_still_running_after_the_grace(
    agent: tuple[DirectServer, Relay],
    engine_stub: tuple[EngineStub, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, relay = agent  # shutdown_grace_s=1
    stub, _ = engine_stub

    async def call(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/relay/llm/v1/hang", headers=hdrs(), content=b"{}")

    async with httpx.AsyncClient(base_url=server.callback_url or "") as client:
        task = asyncio.create_task(call(client))
        async with asyncio.timeout(2):
            await stub.got_request.wait()
        started = time.monotonic()
        async with asyncio.timeout(4):
            await server.stop()
        assert time.monotonic() - started < 3
        async with asyncio.timeout(2):
            await stub.disconnected.wait()
        answer = await task
    assert (answer.status_code, answer.headers.get("x-ic-agent-error")) == (502, "1")
    assert "shutting down" in answer.json()["error"]["message"]
    await wait_idle(relay)
    assert not [r for r in caplog.records if r.exc_info]  # no crash traceback


async def test_an_answer_with_a_length_reaches_the_hub_with_its_head_in_one_piece() -> None:
    """An engine that writes the head and the body apart (as uvicorn does) still gives the
    hub one read: the agent holds the head for the body's first bytes."""
    body = b'{"id":"x","choices":[]}'

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
        writer.write(b"content-length: %d\r\n\r\n" % len(body))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(body)
        await writer.drain()
        await reader.read()  # until the agent closes

    server = await asyncio.start_server(engine, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = make_config([{"type": "llm", "url": f"http://127.0.0.1:{port}/v1", "models": [{"id": "m1"}]}])
    relay = Relay(Catalog(config.services))
    direct = DirectServer(relay, SecretBox(SECRET), host="127.0.0.1", port=0)
    await direct.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", direct.bound_port)
        request = "".join(f"{k}: {v}\r\n" for k, v in hdrs().items())
        writer.write(
            b"POST /relay/llm/v1/chat/completions HTTP/1.1\r\nhost: agent\r\ncontent-length: 2\r\n"
            + request.encode()
            + b"\r\n{}"
        )
        async with asyncio.timeout(5):
            first = await reader.read(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert first.endswith(b"\r\n\r\n" + body)  # not the head alone, 0.1 s before its body
        writer.close()
    finally:
        await direct.stop()
        await relay.aclose()
        server.close()
