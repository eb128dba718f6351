"""Routing: load spread, failover before the first byte, circuit breaker, capacity and busy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.testing.fake_engine import FakeEngineState, Fault
from tests.conftest import RunningHub, make_settings, running_hub
from tests.integration.conftest import engine_server, run_agent, services_for

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "route me"}]


async def _two_providers(
    hub: RunningHub, key: str, exits: AsyncExitStack, *, max_concurrency: int = 4
) -> list[FakeEngineState]:
    engines: list[FakeEngineState] = []
    for name in ("rig-a", "rig-b"):
        state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(
                hub.base_url, key, name, services_for(url, max_concurrency=max_concurrency, types=["llm"])
            )
        )
        engines.append(state)
    return engines


def _client(hub: RunningHub, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{hub.base_url}/v1", api_key=key, max_retries=0)


async def test_load_spreads_over_two_providers(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        a, b = await _two_providers(hub, key, exits)
        client = _client(hub, key)
        await asyncio.gather(
            *[
                client.chat.completions.create(
                    model="fake-chat", messages=CHAT, extra_body={"fake_fault": "latency=0.1"}
                )
                for _ in range(16)
            ]
        )
        served = (a.stats.requests["/v1/chat/completions"], b.stats.requests["/v1/chat/completions"])
        assert min(served) >= 4, served


async def test_failover_before_first_byte_loses_nothing(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        a, b = await _two_providers(hub, key, exits)
        a.add_fault(Fault(status=503))  # rig-a's engine refuses everything
        client = _client(hub, key)
        answers = await asyncio.gather(
            *[client.chat.completions.create(model="fake-chat", messages=CHAT) for _ in range(10)]
        )
        assert all("route me" in (r.choices[0].message.content or "") for r in answers)
        assert b.stats.requests["/v1/chat/completions"] == 10


async def test_failover_when_an_agent_dies(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        _state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(hub.base_url, key, "rig-b", services_for(url, types=["llm"]))
        )
        dying = await exits.enter_async_context(
            run_agent(hub.base_url, key, "rig-a", services_for(url, types=["llm"]))
        )
        await dying.stop()  # its listener is gone; the hub still believes it online
        client = _client(hub, key)
        answers = await asyncio.gather(
            *[client.chat.completions.create(model="fake-chat", messages=CHAT) for _ in range(8)]
        )
        assert len(answers) == 8
        prov_a = hub.hub.registry.find((await hub.hub.auth.authenticate(f"Bearer {key}")).user_id, "rig-a")
        assert prov_a is not None


async def test_circuit_breaker_opens_and_closes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        tmp_path / "data", breaker_failures=2, breaker_cooldown_s=1.0, failover_attempts=0
    )
    async with running_hub(settings) as hub, AsyncExitStack() as exits:
        key = await hub.new_user("alice")
        a, b = await _two_providers(hub, key, exits)
        a.add_fault(Fault(status=500))
        b.add_fault(Fault(status=500))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            for _ in range(4):
                r = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
                assert r.status_code == 502
            breaker = hub.hub.breaker
            states = {p.name: breaker.state(p.id) for p in hub.hub.registry.all()}
            assert states == {"rig-a": "open", "rig-b": "open"}
            a.clear_faults()
            b.clear_faults()
            await asyncio.sleep(1.1)
            assert {breaker.state(p.id) for p in hub.hub.registry.all()} == {"closed"}
            r = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
            assert r.status_code == 200
            provider = next(p for p in hub.hub.registry.all() if p.name == r.headers["x-ic-provider"])
            assert breaker.state(provider.id) == "closed"


async def test_capacity_waits_fifo_then_busy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "data", queue_timeout_s=0.5)
    async with running_hub(settings) as hub, AsyncExitStack() as exits:
        key = await hub.new_user("alice")
        state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(hub.base_url, key, "small", services_for(url, max_concurrency=1, types=["llm"]))
        )
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as http:
            slow = asyncio.create_task(
                http.post(
                    "/v1/chat/completions",
                    json={"model": "fake-chat", "messages": CHAT, "fake_fault": "latency=1.5"},
                )
            )
            await asyncio.sleep(0.2)
            started = time.monotonic()
            busy = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"]["type"] == "busy" and busy.headers["retry-after"]
            assert 0.4 < time.monotonic() - started < 1.4
            assert (await slow).status_code == 200
            # A waiter gets the slot as soon as it frees.
            first = asyncio.create_task(
                http.post(
                    "/v1/chat/completions",
                    json={"model": "fake-chat", "messages": CHAT, "fake_fault": "latency=0.3"},
                )
            )
            await asyncio.sleep(0.05)
            second = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
            assert second.status_code == 200 and (await first).status_code == 200
            assert state.stats.max_in_flight == 1


async def test_client_disconnect_before_first_byte_aborts_engine(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", services_for(url, types=["llm"])))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            task = asyncio.create_task(
                http.post(
                    "/v1/chat/completions",
                    json={"model": "fake-chat", "messages": CHAT, "fake_fault": "hang"},
                )
            )
            await state.wait_until(lambda s: s.in_flight == 1, 5)
            task.cancel()
            await state.wait_until(lambda s: s.aborted == 1, 2)
        await asyncio.sleep(0.1)
        assert hub.hub.capacity.snapshot() and all(
            used == 0 for used, _ in hub.hub.capacity.snapshot().values()
        )


async def test_client_disconnect_mid_stream_aborts_engine(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", services_for(url, types=["llm"])))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            async with http.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "fake-chat",
                    "messages": CHAT,
                    "stream": True,
                    "fake_chunks": 50,
                    "fake_chunk_delay": 0.2,
                },
            ) as response:
                async for _line in response.aiter_lines():
                    break
        started = time.monotonic()
        await state.wait_until(lambda s: s.aborted == 1, 2)
        assert time.monotonic() - started < 2
        # The hub survived and serves the next request.
        answer = await _client(hub, key).chat.completions.create(model="fake-chat", messages=CHAT)
        assert answer.choices


async def test_stream_broken_by_engine_ends_with_error_event(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        _state, url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", services_for(url, types=["llm"])))
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            async with http.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "fake-chat", "messages": CHAT, "stream": True, "fake_fault": "break=2"},
            ) as response:
                async with asyncio.timeout(5):
                    body = (await response.aread()).decode()
        assert "event: error" in body and "upstream_error" in body


@pytest.mark.parametrize("size_field", ["json", "upload"])
async def test_body_limits_answer_413(tmp_path: Path, size_field: str) -> None:
    settings = make_settings(tmp_path / "data", max_body_bytes=10_000, max_upload_bytes=50_000)
    async with running_hub(settings) as hub:
        key = await hub.new_user("alice")
        async with httpx.AsyncClient(
            base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            if size_field == "json":
                r = await http.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "x" * 20_000}]},
                )
            else:
                r = await http.post(
                    "/v1/audio/transcriptions",
                    data={"model": "m"},
                    files={"file": ("a.wav", b"\0" * 60_000, "audio/wav")},
                )
            assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"

            async def chunked() -> AsyncIterator[
                bytes
            ]:  # no content-length: the limit is enforced while streaming
                for _ in range(20):
                    yield b" " * 5_000

            r = await http.post(
                "/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"}
            )
            assert r.status_code == 413
            assert (await http.get("/healthz")).status_code == 200


async def test_truncated_and_malformed_multipart(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        body = (
            b'--XYZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nfake-whisper\r\n'
            b'--XYZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\nRIFF...."
        )  # no closing boundary
        r = await http.post(
            "/v1/audio/transcriptions",
            content=body,
            headers={"content-type": "multipart/form-data; boundary=XYZ"},
        )
        assert r.status_code in (400, 404), r.text
        r = await http.post(
            "/v1/audio/transcriptions", content=b"garbage", headers={"content-type": "multipart/form-data"}
        )
        assert r.status_code == 400, r.text
        # A client that promises more bytes than it sends and hangs up.
        _reader, writer = await asyncio.open_connection("127.0.0.1", int(hub.base_url.rsplit(":", 1)[1]))
        writer.write(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {key}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=XYZ\r\nContent-Length: 100000\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.2)
        assert (await http.get("/healthz")).status_code == 200
