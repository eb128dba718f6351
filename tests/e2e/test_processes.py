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


def test_hub_agent_llama_and_fake_engine(tmp_path: Path, processes: list[ProcessHandle], llama: str) -> None:
    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    hub = start_hub(tmp_path)
    processes.append(hub.handle)
    assert hub.key, hub.handle.log_text()
    config = write_agent_config(tmp_path / "agent.toml", [
        {"type": "llm", "url": llama, "engine": "llamacpp", "max_concurrency": 2,
         "models": [{"id": "tiny-llama", "features": ["streaming"]}]},
        {"type": "embedding", "url": llama, "engine": "llamacpp", "discover": False,
         "models": [{"id": "tiny-llama"}]},
        {"type": "tts", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-tts"}]},
        {"type": "image", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-image"}]},
        {"type": "stt", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-whisper"}]},
    ])
    agent = start_agent(tmp_path, hub.url, hub.key, "home-rig", config)
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-whisper", process=agent)

    client = openai.OpenAI(base_url=f"{hub.url}/v1", api_key=hub.key, max_retries=0, timeout=60)
    # Real llama.cpp through hub and agent: streaming and not, completions, embeddings.
    stream = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=16, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert len(text) > 0
    answer = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    completion = client.completions.create(model="tiny-llama", prompt="Once", max_tokens=8)
    assert completion.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-llama", prompt="Once", max_tokens=8, stream=True) if c.choices)
    assert streamed
    embedding = client.embeddings.create(model="tiny-llama", input="hello")
    assert len(embedding.data[0].embedding) == 64
    # Fake engine behind the same agent: speech, image, transcription.
    speech = client.audio.speech.create(model="fake-tts", voice="alloy", input="hello")
    assert speech.content[:4] == b"RIFF"
    image = client.images.generate(model="fake-image", prompt="a fox")
    assert image.data[0].url and image.data[0].url.startswith(hub.url)
    heard = client.audio.transcriptions.create(
        model="fake-whisper", file=("a.wav", io.BytesIO(speech.content), "audio/wav"))
    assert "a.wav" in heard.text
    assert hub.handle.is_running() and agent.is_running()


def test_first_serve_prints_key_once(tmp_path: Path, processes: list[ProcessHandle]) -> None:
    hub = start_hub(tmp_path)
    assert hub.key
    hub.handle.stop()
    again = start_hub(tmp_path, data_dir=hub.data_dir, name="hub-again")
    processes.append(again.handle)
    assert again.key == ""
    client = openai.OpenAI(base_url=f"{again.url}/v1", api_key=hub.key, max_retries=0)
    assert client.models.list().data == []
