"""A real llama.cpp server on the tiny generated model, driven by the official openai SDK."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from inference_club.testing.servers import free_port
from inference_club.testing.tiny_llama import llama_cpp_available, start_llama_server, write_tiny_llama

pytestmark = pytest.mark.llama
ALIAS = "tiny-llama"
PRINTABLE = {chr(c) for c in range(0x20, 0x7F)}


def test_model_file_is_deterministic_and_well_formed(tmp_path: Path) -> None:
    import gguf

    first = write_tiny_llama(tmp_path / "a.gguf", seed=1)
    second = write_tiny_llama(tmp_path / "b.gguf", seed=1)
    assert first.read_bytes() == second.read_bytes()
    assert write_tiny_llama(tmp_path / "c.gguf", seed=2).read_bytes() != first.read_bytes()
    reader = gguf.GGUFReader(first)
    pre = reader.fields["tokenizer.ggml.pre"]
    assert bytes(pre.parts[pre.data[0]]).decode() == "gpt-2"
    assert "tokenizer.chat_template" in reader.fields
    assert "tokenizer.ggml.merges" in reader.fields


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not llama_cpp_available():
        reason = "llama-cpp-python is not installed (pip install 'llama-cpp-python[server]==0.3.36')"
        if os.environ.get("IC_REQUIRE_SERVICES") == "1":
            pytest.fail(f"IC_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("tiny-llama")
    model = write_tiny_llama(directory / "tiny.gguf")
    port = free_port()
    server = start_llama_server(model, port, ALIAS, embedding=True)
    try:
        server.wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=30)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.stop()


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)


def test_models_list_the_alias(llama_url: str) -> None:
    assert [m.id for m in client(llama_url).models.list().data] == [ALIAS]


def test_chat_runs_to_max_tokens_with_printable_text(llama_url: str) -> None:
    answer = client(llama_url).chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "Hello there"}], max_tokens=24
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 24
    content = answer.choices[0].message.content or ""
    assert content and set(content) <= PRINTABLE


def test_chat_stream(llama_url: str) -> None:
    chunks = list(
        client(llama_url).chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": "Stream please"}], max_tokens=12, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and set(text) <= PRINTABLE
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stream_wire_ends_with_done(llama_url: str) -> None:
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
    raw = httpx.post(llama_url + "/chat/completions", json=body, timeout=30).text
    events = [line for line in raw.split("\n") if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 6


def test_completions(llama_url: str) -> None:
    answer = client(llama_url).completions.create(model=ALIAS, prompt="Once upon", max_tokens=8)
    assert answer.usage is not None and answer.usage.completion_tokens == 8
    assert set(answer.choices[0].text) <= PRINTABLE


async def test_async_client_stream_and_embeddings(llama_url: str) -> None:
    async_client = openai.AsyncOpenAI(base_url=llama_url, api_key="unused", max_retries=0, timeout=30)
    stream = await async_client.completions.create(model=ALIAS, prompt="abc", max_tokens=6, stream=True)
    pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(pieces)
    embeddings = await async_client.embeddings.create(model=ALIAS, input=["hello", "world"])
    assert [len(item.embedding) for item in embeddings.data] == [64, 64]
    assert embeddings.data[0].embedding != embeddings.data[1].embedding
