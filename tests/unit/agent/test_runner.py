from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from inference_club.agent.relay import ENGINE_CONNECTIONS_FLOOR, ENGINE_CONNECTIONS_SPARE
from inference_club.agent.runner import AgentRunner, TransportUnavailable, run_agent, transport_factory
from inference_club.testing.servers import ProcessHandle, free_port
from tests.polling import eventually

from .stubs import EngineStub, FakeHub, make_config


async def test_run_agent_until_stop(
    fake_hub: tuple[FakeHub, str], engine_stub: tuple[EngineStub, str]
) -> None:
    fake, hub_base = fake_hub
    _, engine_base = engine_stub
    config = make_config([{"type": "llm", "url": f"{engine_base}/v1"}], hub=hub_base)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop=stop))
    await fake.wait_beats(1)
    url = fake.beats[0]["callback_url"]
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200
    stop.set()
    async with asyncio.timeout(5):
        await task
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")


async def test_hub_transport_seam_for_in_process_hubs(
    engine_stub: tuple[EngineStub, str],
) -> None:
    """An in-process hub (ASGI) can receive the heartbeat without a socket."""
    fake = FakeHub()
    _, engine_base = engine_stub
    config = make_config([{"type": "llm", "url": f"{engine_base}/v1"}], hub="http://hub.test")
    runner = AgentRunner(config, hub_transport=httpx.ASGITransport(app=fake), report_gpus=False)
    await runner.start()
    try:
        async with asyncio.timeout(5):
            await runner.registered.wait()
        assert fake.beats[0]["services"][0]["models"] == [{"id": "m1"}]
        assert runner.secrets.check(b"s3cret-1")
    finally:
        await runner.stop()
    await runner.stop()  # idempotent


def test_tunnel_is_the_default_transport() -> None:
    config = make_config([{"type": "llm", "url": "http://127.0.0.1:9/v1"}], transport="tunnel")
    runner = AgentRunner(config)
    assert runner.transport.name == "tunnel" and runner.callback_url is None
    assert runner.registered is not runner.heartbeat.registered  # the tunnel carries the heartbeat
    with pytest.raises(TransportUnavailable, match="'tunnel'"):
        transport_factory("carrier-pigeon")


async def test_agent_process_serves_and_stops_on_sigterm(
    fake_hub: tuple[FakeHub, str], engine_stub: tuple[EngineStub, str], tmp_path: Path
) -> None:
    fake, hub_base = fake_hub
    stub, engine_base = engine_stub
    port = free_port()
    with ProcessHandle.python(
        "-m",
        "inference_club.agent",
        "--direct",
        "--listen",
        f"127.0.0.1:{port}",
        "--service",
        f"llm={engine_base}/v1",
        "--name",
        "proc-rig",
        log_path=tmp_path / "agent.log",
        env={"IC_AGENT_HUB": hub_base, "IC_AGENT_KEY": "ic-key"},
    ) as proc:
        await fake.wait_beats(1, timeout=15)
        assert fake.beats[0]["name"] == "proc-rig"
        assert fake.beats[0]["callback_url"] == f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            r = await client.post(
                f"http://127.0.0.1:{port}/relay/llm/v1/chat/completions",
                headers={"x-ic-agent-secret": "s3cret-1", "x-ic-model": "m1"},
                content=b'{"model":"m1"}',
            )
        assert r.status_code == 200, proc.log_tail()
        proc.process.send_signal(signal.SIGTERM)
        await eventually(lambda: not proc.is_running(), timeout=10)
        assert proc.returncode == 0, proc.log_tail()
        log = proc.log_text()
    assert "relay service=llm#0 model=m1 method=POST path=/v1/chat/completions status=200" in log
    assert stub.requests[-1]["path"] == "/v1/chat/completions"


def test_the_engine_client_holds_every_services_concurrency_at_once() -> None:
    """A fixed pool of 512 queued calls beyond it that the hub was told the agent takes."""
    engine = "http://127.0.0.1:9/v1"
    many = make_config(
        [
            {"type": "llm", "url": engine, "max_concurrency": 1000},
            {"type": "embedding", "url": engine, "max_concurrency": 200},
        ],
        transport="tunnel",
    )
    assert AgentRunner(many).engine_connections == 1000 + 200 + ENGINE_CONNECTIONS_SPARE
    few = make_config([{"type": "llm", "url": engine, "max_concurrency": 4}], transport="tunnel")
    assert AgentRunner(few).engine_connections == ENGINE_CONNECTIONS_FLOOR
