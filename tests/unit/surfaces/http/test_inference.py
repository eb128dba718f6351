"""``/v1`` inference routes: one per endpoint row, authenticated first, rate-limit headers on every answer.

The provider is a direct one whose "agent" is the fake engine mounted under the relay
path, on a real loopback socket: the hub's calls go out on the direct transport's wire.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.routing import Mount

from inference_club.domain.endpoints import ENDPOINTS
from inference_club.testing.fake_engine import FakeEngineState, create_fake_engine
from inference_club.testing.servers import serve_app
from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

CHAT = "/v1/chat/completions"
MODEL = "fake-chat"
RPM = 5
PATHS = [e.path for e in ENDPOINTS]


@pytest.fixture(scope="module")
def hub_overrides() -> dict[str, object]:
    return {"rate_limit_rpm": RPM}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent_url() -> AsyncIterator[str]:
    """The relay path of an agent (``/relay/llm/...``) answered by the fake engine."""
    agent = Starlette(routes=[Mount("/relay/llm", app=create_fake_engine(FakeEngineState()))])
    async with serve_app(agent, shutdown_timeout_s=0.5) as url:
        yield url


async def served_key(api: InProcessHub, agent_url: str) -> str:
    key = await api.new_key(routing="own")
    body = {
        "name": "rig",
        "transport": "direct",
        "callback_url": agent_url,
        "services": [{"type": "llm", "max_concurrency": 2, "models": [{"id": MODEL}]}],
    }
    assert (
        await api.http.post("/api/inference/agent/heartbeat", json=body, headers=auth(key))
    ).status_code == 200
    return key


def chat(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], **extra}


@pytest.mark.parametrize("path", PATHS)
async def test_every_endpoint_is_a_post_route_that_checks_the_key_first(api: InProcessHub, path: str) -> None:
    refused = await api.http.post(path, content=b"not even json")
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "invalid_api_key"
    key = await api.new_key()
    wrong_method = await api.http.get(path, headers=auth(key))
    assert wrong_method.status_code == 405


async def test_a_call_is_answered_by_the_provider_with_the_rate_headers(
    api: InProcessHub, agent_url: str
) -> None:
    key = await served_key(api, agent_url)
    answer = await api.http.post(CHAT, json=chat(), headers=auth(key))
    assert answer.status_code == 200, answer.text
    assert answer.json()["object"] == "chat.completion" and answer.json()["choices"]
    assert answer.headers["x-ratelimit-limit-requests"] == str(RPM)
    assert answer.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)


async def test_a_streamed_call_is_sse_ending_with_done(api: InProcessHub, agent_url: str) -> None:
    key = await served_key(api, agent_url)
    answer = await api.http.post(CHAT, json=chat(stream=True), headers=auth(key))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.text.rstrip().endswith("data: [DONE]")


async def test_an_error_answer_still_carries_the_rate_headers(api: InProcessHub) -> None:
    key = await api.new_key()
    answer = await api.http.post(CHAT, json={**chat(), "model": "unserved"}, headers=auth(key))
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "no_provider"
    assert answer.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)


async def test_over_the_rate_a_key_is_429_with_retry_after_before_its_body_is_read(api: InProcessHub) -> None:
    key = await api.new_key()
    for _ in range(RPM):
        await api.http.post(CHAT, json={**chat(), "model": "unserved"}, headers=auth(key))
    answer = await api.http.post(CHAT, content=b"{broken", headers=auth(key))
    assert answer.status_code == 429 and answer.json()["error"]["type"] == "rate_limited"
    assert float(answer.headers["retry-after"]) > 0
    other = await api.new_key()  # the limit is per key
    assert (
        await api.http.post(CHAT, json={**chat(), "model": "unserved"}, headers=auth(other))
    ).status_code == 404


async def test_async_with_an_upload_is_refused_naming_async(api: InProcessHub) -> None:
    key = await api.new_key()
    answer = await api.http.post(
        "/v1/audio/transcriptions",
        data={"model": "w", "async": "true"},
        files={"file": ("a.wav", b"RIFF", "audio/wav")},
        headers=auth(key),
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "async"


async def test_voices_need_a_model_and_a_provider_for_it(api: InProcessHub) -> None:
    key = await api.new_key()
    missing = await api.http.get("/v1/audio/voices", headers=auth(key))
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    unserved = await api.http.get("/v1/audio/voices", params={"model": "no-tts"}, headers=auth(key))
    assert unserved.status_code == 404 and unserved.json()["error"]["type"] == "no_provider"


async def test_each_route_has_the_endpoints_name_as_its_operation_id(api: InProcessHub) -> None:
    paths = (await api.http.get("/openapi.json")).json()["paths"]
    for endpoint in ENDPOINTS:
        operation_id = paths[endpoint.path]["post"]["operationId"]
        assert operation_id == endpoint.name.replace(".", "_") and re.fullmatch(r"\w+", operation_id)
