"""LiteLLM's and LangChain's OpenAI clients through the hub give what a direct call to
the suite's llama.cpp engine gives: a chat, a stream and an embedding each.

The tiny llama model is deterministic at temperature 0, so the hub's answers must equal
the engine's own, token for token and float for float.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.testing.servers import ProcessHandle, free_port
from inference_club.testing.tiny_llama import llama_cpp_available, start_llama_server, write_tiny_llama
from tests.conftest import RunningHub, skip_or_fail
from tests.integration.conftest import run_agent

# LiteLLM fetches a price list from the internet at import unless told to use its own copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytestmark = [pytest.mark.llama, pytest.mark.slow]

MODEL = "tiny-llama"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say something."}]
ENGINE_KEY = "unused-by-llama"  # clients insist on a key; llama.cpp ignores it


@pytest.fixture(scope="module")
def llama_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not llama_cpp_available():
        skip_or_fail("llama-cpp-python is not installed (make test installs it)")
    tmp = tmp_path_factory.mktemp("llama")
    port = free_port()
    handle: ProcessHandle = start_llama_server(
        write_tiny_llama(tmp / "tiny.gguf"), port, MODEL, embedding=True, log_path=tmp / "llama.log"
    )
    try:
        handle.wait_http(f"http://127.0.0.1:{port}/v1/models", timeout=60)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        handle.stop()


@dataclass
class Endpoints:
    direct: tuple[str, str]  # (base URL, key)
    hub: tuple[str, str]


@pytest.fixture
async def endpoints(hub: RunningHub, llama_url: str) -> AsyncIterator[Endpoints]:
    key = await hub.new_user("alice")
    services = [
        {"type": "llm", "url": llama_url, "engine": "llamacpp", "discover": False, "models": [{"id": MODEL}]},
        {
            "type": "embedding",
            "url": llama_url,
            "engine": "llamacpp",
            "discover": False,
            "models": [{"id": MODEL}],
        },
    ]
    async with run_agent(hub.base_url, key, "home-rig", services, transport="tunnel"):
        yield Endpoints(direct=(llama_url, ENGINE_KEY), hub=(f"{hub.base_url}/v1", key))


async def test_litellm_chat_stream_and_embedding_match_a_direct_call(endpoints: Endpoints) -> None:
    import litellm

    async def run(base: str, key: str) -> tuple[str, str, list[float]]:
        common = {"model": f"openai/{MODEL}", "api_base": base, "api_key": key}
        chat = await litellm.acompletion(messages=MESSAGES, temperature=0, max_tokens=12, **common)
        stream = await litellm.acompletion(
            messages=MESSAGES, temperature=0, max_tokens=12, stream=True, **common
        )
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        embedding = await litellm.aembedding(input=["hello world"], **common)
        return chat.choices[0].message.content, streamed, embedding.data[0]["embedding"]

    direct = await run(*endpoints.direct)
    through_hub = await run(*endpoints.hub)
    assert direct[0] and len(direct[2]) > 0
    assert through_hub == direct


async def test_langchain_chat_stream_and_embedding_match_a_direct_call(endpoints: Endpoints) -> None:
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    async def run(base: str, key: str) -> tuple[str, str, list[float]]:
        chat_model = ChatOpenAI(
            model=MODEL, base_url=base, api_key=key, temperature=0, max_tokens=12, max_retries=0
        )
        chat = await chat_model.ainvoke("Say something.")
        streamed = "".join([str(chunk.content) async for chunk in chat_model.astream("Say something.")])
        # No tiktoken: it would download its encodings; llama.cpp takes raw text anyway.
        embedder = OpenAIEmbeddings(
            model=MODEL,
            base_url=base,
            api_key=key,  # type: ignore[call-arg]
            check_embedding_ctx_length=False,
            max_retries=0,
        )
        vector = await embedder.aembed_query("hello world")
        return str(chat.content), streamed, vector

    direct = await run(*endpoints.direct)
    through_hub = await run(*endpoints.hub)
    assert direct[0] and len(direct[2]) > 0
    assert through_hub == direct
