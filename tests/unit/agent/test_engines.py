"""The pass-through engines: where a hub path goes, the local key, and model listings read
from a real OpenAI-compatible server (the fake engine), a missing one, and a wrong path."""

from __future__ import annotations

import httpx
import pytest

from inference_club.agent.config import ServiceConfig
from inference_club.agent.engines import Engine, OllamaEngine, engine_for
from inference_club.testing.fake_engine import create_fake_engine
from inference_club.testing.fake_state import FakeEngineState
from inference_club.testing.servers import free_port, serve_app


def service(url: str, engine: str = "openai", api_key: str = "") -> ServiceConfig:
    return ServiceConfig(type="llm", url=url, engine=engine, api_key=api_key)


def test_hub_paths_map_under_the_service_url() -> None:
    engine = engine_for(service("http://127.0.0.1:8080/v1/"))
    assert type(engine) is Engine
    assert engine.target_url("/v1/chat/completions") == "http://127.0.0.1:8080/v1/chat/completions"
    assert engine.target_url("/v1/audio/voices?model=x") == "http://127.0.0.1:8080/v1/audio/voices?model=x"
    assert engine.target_url("/v1") == "http://127.0.0.1:8080/v1"
    with pytest.raises(ValueError, match="must start with /v1/"):
        engine.target_url("/v2/x")
    with pytest.raises(ValueError):
        engine.target_url("/v1x")
    assert engine.auth_headers() == {}
    assert engine_for(service("http://h/v1", api_key="local")).auth_headers() == {
        "authorization": "Bearer local"
    }


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:11434", "http://127.0.0.1:11434/", "http://127.0.0.1:11434/v1"]
)
def test_an_ollama_url_works_with_or_without_v1(url: str) -> None:
    engine = engine_for(service(url, engine="ollama"))
    assert isinstance(engine, OllamaEngine)
    assert engine.openai_url == "http://127.0.0.1:11434/v1" and engine.base_url == "http://127.0.0.1:11434"


async def test_listings_from_a_server_a_missing_one_and_a_wrong_path() -> None:
    state = FakeEngineState()
    async with (
        serve_app(create_fake_engine(state), shutdown_timeout_s=0.5) as url,
        httpx.AsyncClient() as client,
    ):
        listed = await engine_for(service(f"{url}/v1")).list_models(client, timeout=5)
        assert listed.reachable and listed.problem is None and listed.models is not None
        assert "fake-chat" in {m.id for m in listed.models}
        wrong = await engine_for(service(f"{url}/nowhere")).list_models(client, timeout=5)
        assert wrong.reachable and wrong.models is None and not wrong.refused
        assert wrong.problem is not None and wrong.problem.startswith("HTTP 404")
        # Ollama: the native list is missing here, the OpenAI-compatible one still counts.
        ollama = await engine_for(service(url, engine="ollama")).list_models(client, timeout=5)
        assert ollama.models is not None and {m.id for m in ollama.models} == {m.id for m in listed.models}
        nobody = f"http://127.0.0.1:{free_port()}/v1"
        refused = await engine_for(service(nobody)).list_models(client, timeout=5)
        assert refused.refused and not refused.reachable and refused.models is None
        assert refused.problem is not None and nobody in refused.problem
