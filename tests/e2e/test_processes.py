"""The real thing: serve, agent, fake engine and llama.cpp as processes on loopback ports."""

from __future__ import annotations

import io
from pathlib import Path

import openai
import pytest

from inference_club.testing.servers import ProcessHandle, free_port
from inference_club.testing.tiny_llama import llama_cpp_available, start_llama_server, write_tiny_llama
from tests.conftest import skip_or_fail
from tests.e2e.conftest import start_agent, start_fake_engine, start_hub, wait_for_model, write_agent_config


@pytest.fixture
def llama(tmp_path: Path, processes: list[ProcessHandle]) -> str:
    if not llama_cpp_available():
        skip_or_fail("llama-cpp-python is not installed (make test installs it)")
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    port = free_port()
    handle = start_llama_server(model, port, "tiny-llama", embedding=True, log_path=tmp_path / "llama.log")
    processes.append(handle)
    handle.wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=60)
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("transport", ["direct", "tunnel"])
def test_hub_agent_llama_and_fake_engine(
    tmp_path: Path, processes: list[ProcessHandle], llama: str, transport: str
) -> None:
    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    hub = start_hub(tmp_path)
    processes.append(hub.handle)
    assert hub.key, hub.handle.log_text()
    config = write_agent_config(
        tmp_path / "agent.toml",
        [
            {
                "type": "llm",
                "url": llama,
                "engine": "llamacpp",
                "max_concurrency": 2,
                "models": [{"id": "tiny-llama", "features": ["streaming"]}],
            },
            {
                "type": "embedding",
                "url": llama,
                "engine": "llamacpp",
                "discover": False,
                "models": [{"id": "tiny-llama"}],
            },
            {"type": "tts", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-tts"}]},
            {"type": "image", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-image"}]},
            {"type": "stt", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-whisper"}]},
        ],
    )
    agent = start_agent(tmp_path, hub.url, hub.key, "home-rig", config, transport=transport)
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-whisper", process=agent)

    client = openai.OpenAI(base_url=f"{hub.url}/v1", api_key=hub.key, max_retries=0, timeout=60)
    # Real llama.cpp through hub and agent: streaming and not, completions, embeddings.
    stream = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=16, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert len(text) > 0
    answer = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    completion = client.completions.create(model="tiny-llama", prompt="Once", max_tokens=8)
    assert completion.choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="tiny-llama", prompt="Once", max_tokens=8, stream=True)
        if c.choices
    )
    assert streamed
    embedding = client.embeddings.create(model="tiny-llama", input="hello")
    assert len(embedding.data[0].embedding) == 64
    # Fake engine behind the same agent: speech, image, transcription.
    speech = client.audio.speech.create(model="fake-tts", voice="alloy", input="hello")
    assert speech.content[:4] == b"RIFF"
    image = client.images.generate(model="fake-image", prompt="a fox")
    assert image.data and image.data[0].url and image.data[0].url.startswith(hub.url)
    heard = client.audio.transcriptions.create(
        model="fake-whisper", file=("a.wav", io.BytesIO(speech.content), "audio/wav")
    )
    assert "a.wav" in heard.text
    assert hub.handle.is_running() and agent.is_running()


def test_first_serve_prints_key_once(tmp_path: Path, processes: list[ProcessHandle]) -> None:
    import httpx

    hub = start_hub(tmp_path)
    assert hub.key
    # What `serve` itself answers: security headers, and no banner naming the server software.
    answer = httpx.get(f"{hub.url}/v1/models", headers={"Authorization": f"Bearer {hub.key}"}, timeout=30)
    assert answer.status_code == 200
    assert "server" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff" and "date" in answer.headers
    hub.handle.stop()
    again = start_hub(tmp_path, data_dir=hub.data_dir, name="hub-again")
    processes.append(again.handle)
    assert again.key == ""
    client = openai.OpenAI(base_url=f"{again.url}/v1", api_key=hub.key, max_retries=0)
    assert client.models.list().data == []


def _video_agent(
    tmp_path: Path, hub_url: str, key: str, name: str, engine_url: str, transport: str = "direct"
) -> ProcessHandle:
    config = write_agent_config(
        tmp_path / f"{name}.toml",
        [
            {"type": "llm", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-chat"}]},
            {"type": "video", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-video"}]},
        ],
    )
    return start_agent(tmp_path, hub_url, key, name, config, transport=transport)


def test_large_video_flows_with_bounded_hub_memory(tmp_path: Path, processes: list[ProcessHandle]) -> None:
    import httpx
    import psutil

    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    hub = start_hub(tmp_path)
    processes.append(hub.handle)
    agent = _video_agent(tmp_path, hub.url, hub.key, "rig", engine_url)
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-video", process=agent)
    hub_proc = psutil.Process(hub.handle.pid)
    before = hub_proc.memory_info().rss
    peak = before
    size = 100 * 1024 * 1024
    received = 0
    with (
        httpx.Client(timeout=120) as http,
        http.stream(
            "POST",
            f"{hub.url}/v1/videos/generations",
            headers={"Authorization": f"Bearer {hub.key}"},
            json={"model": "fake-video", "prompt": "long", "fake_size_bytes": size},
        ) as response,
    ):
        assert response.status_code == 200
        file_url = response.headers["x-file-url"]
        for chunk in response.iter_bytes():
            received += len(chunk)
            peak = max(peak, hub_proc.memory_info().rss)
    assert received == size
    assert peak - before < 50 * 1024 * 1024, f"hub RSS grew by {(peak - before) / 2**20:.1f} MiB"
    with httpx.Client(timeout=120) as http:
        head = http.get(file_url, headers={"Authorization": f"Bearer {hub.key}"})
        assert int(head.headers["content-length"]) == size


@pytest.mark.parametrize("transport", ["direct", "tunnel"])
def test_killing_one_agent_mid_run_loses_no_request(
    tmp_path: Path, processes: list[ProcessHandle], transport: str
) -> None:
    import concurrent.futures
    import time

    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    hub = start_hub(tmp_path)
    processes.append(hub.handle)
    agents = [
        _video_agent(tmp_path, hub.url, hub.key, name, engine_url, transport) for name in ("rig-a", "rig-b")
    ]
    processes.extend(agents)
    client = openai.OpenAI(base_url=f"{hub.url}/v1", api_key=hub.key, max_retries=0, timeout=30)
    deadline = time.monotonic() + 30
    registered = ("registered with the hub", "open: provider")  # direct heartbeat, tunnel welcome
    while not all(any(r in a.log_text() for r in registered) for a in agents) and time.monotonic() < deadline:
        time.sleep(0.05)

    def ask(i: int) -> str:
        answer = client.chat.completions.create(
            model="fake-chat",
            messages=[{"role": "user", "content": f"request {i}"}],
            extra_body={"fake_fault": "latency=0.4"},
        )
        return answer.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(ask, i) for i in range(24)]
        time.sleep(0.3)
        agents[0].kill()
        answers = [f.result() for f in futures]
    assert [f"request {i}" in a for i, a in enumerate(answers)] == [True] * 24
