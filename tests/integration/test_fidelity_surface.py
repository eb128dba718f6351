"""OpenAI surface gaps: models.retrieve, the Responses API, unknown paths, error envelopes,
one entry per model id, wrong-endpoint and async-upload messages."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.testing.fake_engine import FakeEngineSettings, FakeEngineState
from tests.conftest import RunningHub
from tests.integration.conftest import Stack, engine_server, run_agent, services_for

# One transport is enough here: both are covered by the inference tests.
tunnel_only = pytest.mark.parametrize("stack", ["tunnel"], indirect=True)

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


@tunnel_only
async def test_models_retrieve(stack: Stack) -> None:
    client = stack.client()
    model = await client.models.retrieve("fake-chat")
    assert model.id == "fake-chat" and model.owned_by == "home-rig"
    assert model.model_extra is not None and model.model_extra["service_types"] == ["llm"]
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("no-such-model")
    assert missing.value.type == "not_found"
    stranger = await stack.hub.new_user("mallory")
    with pytest.raises(openai.NotFoundError):  # not reachable by this user: same answer
        await stack.client(stranger).models.retrieve("fake-chat")


async def test_model_ids_with_a_slash_are_retrievable(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        _, url = await exits.enter_async_context(engine_server())
        service = {"type": "llm", "url": f"{url}/v1", "discover": False, "models": [{"id": "Qwen/Qwen3-8B"}]}
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", [service]))
        client = openai.AsyncOpenAI(base_url=f"{hub.base_url}/v1", api_key=key, max_retries=0)
        assert (await client.models.retrieve("Qwen/Qwen3-8B")).id == "Qwen/Qwen3-8B"


async def test_one_entry_per_model_id_with_every_service_type(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        _, url = await exits.enter_async_context(engine_server())
        services = [
            {
                "type": "llm",
                "url": f"{url}/v1",
                "discover": False,
                "models": [{"id": "qwen3", "features": ["tools"]}],
            },
            {"type": "embedding", "url": f"{url}/v1", "discover": False, "models": [{"id": "qwen3"}]},
            {"type": "stt", "url": f"{url}/v1", "discover": False, "models": [{"id": "whisper"}]},
        ]
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", services))
        client = openai.AsyncOpenAI(base_url=f"{hub.base_url}/v1", api_key=key, max_retries=0)
        listed = (await client.models.list()).data
        assert sorted(m.id for m in listed) == ["qwen3", "whisper"]
        qwen = next(m for m in listed if m.id == "qwen3")
        assert qwen.model_extra is not None
        assert qwen.model_extra["service_types"] == ["llm", "embedding"]
        assert "embedding" in qwen.model_extra["output_modalities"]
        # Both service types still route.
        assert (await client.embeddings.create(model="qwen3", input="hi")).data
        assert (await client.chat.completions.create(model="qwen3", messages=CHAT)).choices
        with pytest.raises(openai.NotFoundError) as wrong:
            await client.chat.completions.create(model="whisper", messages=CHAT)
        assert wrong.value.type == "no_provider"
        assert "'whisper' is served as stt, not llm" in str(wrong.value)


@tunnel_only
async def test_unknown_v1_path_checks_auth_then_answers_the_envelope(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.hub.base_url, timeout=10) as anonymous:
        refused = await anonymous.get("/v1/nothing/here")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "invalid_api_key"
    async with stack.http() as http:
        unknown = await http.post("/v1/nothing/here", json={})
        assert unknown.status_code == 404
        body = unknown.json()
        assert body["error"]["type"] == "not_found" and body["detail"] == "Not Found"
        wrong_method = await http.delete("/v1/chat/completions")
        assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]


@tunnel_only
async def test_sdk_reads_the_message_of_a_401(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        await stack.client("ic_wrong").models.list()
    assert refused.value.type == "invalid_api_key"
    assert isinstance(refused.value.body, dict) and refused.value.body["message"]
    assert refused.value.body["message"] in str(refused.value)


@tunnel_only
@pytest.mark.parametrize("value", ["true", "false"])
async def test_async_on_uploads_names_the_field(stack: Stack, value: str) -> None:
    uploads = [
        (
            "/v1/audio/transcriptions",
            {"model": "fake-whisper"},
            {"file": ("a.wav", b"RIFF....", "audio/wav")},
        ),
        (
            "/v1/images/edits",
            {"model": "fake-image", "prompt": "blue"},
            {"image": ("a.png", b"\x89PNG", "image/png")},
        ),
        (
            "/v1/voice/generations",
            {"model": "fake-voice", "input": "[S1] hi"},
            {"speaker_S1": ("s.wav", b"RIFF....", "audio/wav")},
        ),
        ("/v1/3d/generations", {"model": "fake-mesh"}, {"image": ("c.png", b"\x89PNG", "image/png")}),
    ]
    async with stack.http() as http:
        for path, fields, files in uploads:
            answer = await http.post(path, data={**fields, "async": value}, files=files)
            assert answer.status_code == 400, (path, answer.text)
            error = answer.json()["error"]
            assert error["param"] == "async"
            assert (
                error["message"] == f"{path} is synchronous only; `async` is not accepted with file uploads."
            )
    assert not any(path in stack.engine.stats.requests for path, _, _ in uploads)


# --------------------------------------------------------------------------- Responses API


@tunnel_only
async def test_responses_plain_stream_and_async(stack: Stack) -> None:
    client = stack.client()
    answer = await client.responses.create(model="fake-chat", input="tell me a story")
    assert answer.output_text == "tell me a story"
    assert answer.usage is not None and answer.usage.output_tokens == 4

    events = [
        event
        async for event in await client.responses.create(
            model="fake-chat", input="streamed words here", stream=True
        )
    ]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "streamed words here"

    async with stack.http() as http:
        queued = await http.post(
            "/v1/responses", json={"model": "fake-chat", "input": "later", "async": True}
        )
        assert queued.status_code == 202, queued.text
        job = (await http.get(f"/v1/jobs/{queued.json()['id']}", params={"wait": 10})).json()
        assert job["status"] == "PROCESSED" and job["result"]["output"][0]["content"][0]["text"] == "later"
        invalid = await http.post("/v1/responses", json={"model": "fake-chat"})
        assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "input"
    with pytest.raises(openai.NotFoundError) as nobody:
        await client.responses.create(model="nobody-serves-this", input="hi")
    assert nobody.value.type == "no_provider"


async def test_responses_to_an_engine_without_it_is_a_clear_error(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with AsyncExitStack() as exits:
        state = FakeEngineState(settings=FakeEngineSettings(responses_api=False))
        _, url = await exits.enter_async_context(engine_server(state))
        await exits.enter_async_context(run_agent(hub.base_url, key, "rig", services_for(url, types=["llm"])))
        client = openai.AsyncOpenAI(base_url=f"{hub.base_url}/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.NotFoundError) as refused:
            await client.responses.create(model="fake-chat", input="hi")
        assert refused.value.type == "upstream_error"
        assert "does not serve /v1/responses" in str(refused.value)
        assert (await client.chat.completions.create(model="fake-chat", messages=CHAT)).choices
