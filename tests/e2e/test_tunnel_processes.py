"""The tunnel between real processes: ``inference-club serve``, ``inference-club agent`` (tunnel,
the default) and the fake engine, on loopback. Kill -9 the agent, restart the hub, push 100 MB.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.testing.servers import ProcessHandle
from tests.e2e.conftest import (
    HubProcess,
    start_agent,
    start_fake_engine,
    start_hub,
    wait_for_model,
    write_agent_config,
)

pytestmark = pytest.mark.e2e

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello through the tunnel"}]


def tunnel_agent(tmp: Path, hub: HubProcess, engine_url: str, name: str = "rig") -> ProcessHandle:
    config = write_agent_config(
        tmp / f"{name}.toml",
        [
            {
                "type": "llm",
                "url": f"{engine_url}/v1",
                "max_concurrency": 8,
                "discover": False,
                "models": [{"id": "fake-chat", "features": ["streaming"]}],
            },
            {
                "type": "video",
                "url": f"{engine_url}/v1",
                "max_concurrency": 2,
                "discover": False,
                "models": [{"id": "fake-video"}],
            },
        ],
    )
    return start_agent(tmp, hub.url, hub.key, name, config, transport="tunnel")


def client(hub: HubProcess, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {hub.key}"}, timeout=timeout)


def chat(http: httpx.Client) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})


def wait_until_served(http: httpx.Client, timeout: float) -> float:
    """Seconds until a chat is answered 200 (fails after ``timeout``)."""
    started = time.monotonic()
    while (answer := chat(http)).status_code != 200:
        assert answer.status_code == 404, answer.text
        assert time.monotonic() - started < timeout, f"not served again within {timeout}s"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def engine(tmp_path: Path, processes: list[ProcessHandle]) -> str:
    handle, url = start_fake_engine(tmp_path)
    processes.append(handle)
    return url


@pytest.fixture
def hub(tmp_path: Path, processes: list[ProcessHandle]) -> HubProcess:
    hub = start_hub(tmp_path)
    processes.append(hub.handle)
    assert hub.key, hub.handle.log_text()
    return hub


def test_kill_9_of_the_agent_mid_stream_then_it_comes_back(
    tmp_path: Path, processes: list[ProcessHandle], hub: HubProcess, engine: str
) -> None:
    agent = tunnel_agent(tmp_path, hub, engine)
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-chat", process=agent)
    assert "tunnel" in agent.log_text() and "listening" not in agent.log_text()  # no inbound port

    with client(hub) as http:
        body = {
            "model": "fake-chat",
            "messages": CHAT,
            "stream": True,
            "fake_chunks": 100,
            "fake_chunk_delay": 0.1,
        }
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            agent.kill()
            killed = time.monotonic()
            rest = list(lines)
            ended_after = time.monotonic() - killed
        assert ended_after < 2.0, ended_after
        assert "event: error" in rest and "data: [DONE]" not in rest

        answer = chat(http)  # no other provider: unroutable at once
        assert answer.status_code == 404 and answer.json()["error"]["type"] == "no_provider"
        assert httpx.get(f"{engine}/_stats").json()["aborted"] == 1  # the engine saw its client go

        again = tunnel_agent(tmp_path, hub, engine)
        processes.append(again)
        wait_until_served(http, timeout=20)


def test_hub_restart_agent_reconnects_and_serves(
    tmp_path: Path, processes: list[ProcessHandle], hub: HubProcess, engine: str
) -> None:
    agent = tunnel_agent(tmp_path, hub, engine)
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-chat", process=agent)
    with client(hub) as http:
        assert chat(http).status_code == 200

    hub.handle.kill()
    time.sleep(3)  # down for a while: the agent backs off meanwhile
    port = int(hub.url.rsplit(":", 1)[1])
    restarted = start_hub(tmp_path, port=port, data_dir=hub.data_dir, name="hub-again")
    processes.append(restarted.handle)
    restarted.key = hub.key
    with client(restarted) as http:
        took = wait_until_served(http, timeout=35)
    assert took < 35
    assert agent.is_running()


def test_a_100_mb_video_crosses_with_bounded_hub_memory(
    tmp_path: Path, processes: list[ProcessHandle], hub: HubProcess, engine: str
) -> None:
    size = 100_000_000
    agent = tunnel_agent(tmp_path, hub, engine)
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-video", process=agent)
    process = psutil.Process(hub.handle.pid)

    with client(hub, timeout=60) as http:

        def video(n: int) -> tuple[int, str]:
            received = 0
            body = {"model": "fake-video", "prompt": "a very long film", "fake_size_bytes": n}
            with http.stream("POST", "/v1/videos/generations", json=body) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"] == "video/mp4"
                for chunk in response.iter_raw(1 << 16):
                    received += len(chunk)
                return received, response.headers["x-file-id"]

        video(2_000_000)  # warm up: code paths, pools, buffers
        baseline = process.memory_info().rss
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        try:
            received, file_id = video(size)
        finally:
            done.set()
            sampler.join()
        took = time.monotonic() - started
        assert received == size
        assert http.get(f"/v1/files/{file_id}").json()["bytes"] == size
    growth = (peak - baseline) / 1e6
    assert growth < 50, f"hub RSS grew by {growth:.1f} MB while relaying {size / 1e6:.0f} MB"
    print(f"100 MB over the tunnel in {took:.2f}s, hub RSS growth {growth:.1f} MB")
