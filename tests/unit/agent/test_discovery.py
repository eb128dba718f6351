from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from inference_club.agent import engines
from inference_club.agent.config import ServiceConfig
from inference_club.agent.discovery import Catalog, Discovery
from inference_club.agent.engines import engine_for
from inference_club.testing.servers import serve_app

from .stubs import EngineStub, make_config


async def discover(config_services: list[dict[str, object]]) -> tuple[Catalog, Discovery]:
    config = make_config(config_services)
    catalog = Catalog(config.services)
    client = httpx.AsyncClient(trust_env=False)
    discovery = Discovery(catalog, client, interval_s=60, timeout_s=2)
    await discovery.refresh()
    await client.aclose()
    return catalog, discovery


def ids(catalog: Catalog, index: int = 0) -> list[str]:
    return [m.id for m in catalog.services[index].models]


async def test_openai_listing_adds_to_declared_models() -> None:
    stub = EngineStub(["a", "declared"])
    async with serve_app(stub) as base:
        catalog, _ = await discover(
            [
                {
                    "type": "llm",
                    "url": f"{base}/v1",
                    "models": [{"id": "declared", "features": ["tools"], "context_length": 4096}],
                }
            ]
        )
    state = catalog.services[0]
    assert ids(catalog) == ["declared", "a"]
    assert state.reachable is True
    assert state.models[0].to_wire() == {
        "id": "declared",
        "context_length": 4096,
        "features": ["tools"],
    }
    assert state.models[1].to_wire() == {"id": "a"}  # nothing guessed
    assert [r["path"] for r in stub.requests] == ["/v1/models"]
    assert catalog.candidates("llm", "a") == [state]
    assert catalog.candidates("tts", "a") == []


async def test_api_key_goes_to_the_local_server() -> None:
    stub = EngineStub(["a"])
    async with serve_app(stub) as base:
        await discover([{"type": "llm", "url": f"{base}/v1", "api_key": "local-key"}])
    assert stub.requests[0]["headers"]["authorization"] == "Bearer local-key"


async def test_ollama_native_list_and_openai_list_are_merged() -> None:
    stub = EngineStub(["qwen3:8b"], ollama=True)
    stub.tags = ["qwen3:8b", "nomic-embed-text:latest"]
    async with serve_app(stub) as base:
        catalog, _ = await discover([{"type": "llm", "url": f"{base}/v1", "engine": "ollama"}])
    assert sorted(ids(catalog)) == ["nomic-embed-text:latest", "qwen3:8b"]
    assert sorted(r["path"] for r in stub.requests) == ["/api/tags", "/v1/models"]


async def test_ollama_native_list_alone_is_enough() -> None:
    stub = EngineStub(["ignored"], ollama=True)
    stub.models_status = 404  # an old Ollama without /v1/models
    stub.tags = ["llama3:latest"]
    async with serve_app(stub) as base:
        # an Ollama URL without /v1 is accepted: /v1 is appended for requests
        catalog, _ = await discover([{"type": "llm", "url": base, "engine": "ollama"}])
    assert ids(catalog) == ["llama3:latest"]
    assert catalog.services[0].engine.target_url("/v1/chat/completions") == (f"{base}/v1/chat/completions")


def test_openai_target_url_mapping() -> None:
    engine = engine_for(ServiceConfig(type="tts", url="http://h:1/v1"))
    assert engine.target_url("/v1/audio/speech") == "http://h:1/v1/audio/speech"
    assert engine.target_url("/v1/audio/voices?model=x") == "http://h:1/v1/audio/voices?model=x"
    other = engine_for(ServiceConfig(type="image", url="http://h:2/api/openai/v1"))
    assert other.target_url("/v1/images/generations") == ("http://h:2/api/openai/v1/images/generations")
    with pytest.raises(ValueError):
        engine.target_url("/admin")


def test_request_urls_are_parsed_once_per_path_and_the_memory_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engines, "_PARSED_URLS", 3)
    engine = engine_for(ServiceConfig(type="tts", url="http://h:1/v1"))
    first = engine.request_url("/v1/audio/voices?model=x")
    assert str(first) == "http://h:1/v1/audio/voices?model=x" and first.query == b"model=x"
    assert engine.request_url("/v1/audio/voices?model=x") is first  # not parsed again
    for n in range(10):
        assert str(engine.request_url(f"/v1/audio/voices?model={n}")).endswith(f"model={n}")
    assert len(engine._parsed) <= 3
    with pytest.raises(ValueError):
        engine.request_url("/admin")


async def test_discover_false_advertises_declared_only() -> None:
    stub = EngineStub(["a", "b"])
    async with serve_app(stub) as base:
        catalog, _ = await discover(
            [{"type": "llm", "url": f"{base}/v1", "discover": False, "models": [{"id": "x"}]}]
        )
    assert ids(catalog) == ["x"]
    assert catalog.services[0].reachable is True  # still probed for the health snapshot


async def test_failing_server_keeps_declared_models_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inference_club.agent.discovery")
    stub = EngineStub(["a"])
    async with serve_app(stub) as base:
        config = make_config([{"type": "llm", "url": f"{base}/v1", "models": [{"id": "declared"}]}])
        catalog = Catalog(config.services)
        changes: list[int] = []
        async with httpx.AsyncClient(trust_env=False) as client:
            discovery = Discovery(catalog, client, timeout_s=2, on_change=lambda: changes.append(1))
            assert await discovery.refresh() is True
            assert ids(catalog) == ["declared", "a"]
            assert await discovery.refresh() is False  # unchanged: no heartbeat poke
            stub.models_status = 500
            await discovery.refresh()
            await discovery.refresh()
            await discovery.refresh()
            assert ids(catalog) == ["declared"]
            assert catalog.services[0].reachable is True  # it answers, just not a list
            stub.models_status = 200
            await discovery.refresh()
            assert ids(catalog) == ["declared", "a"]
    assert changes == [1, 1, 1]
    warnings = [r for r in caplog.records if "cannot be listed" in r.getMessage()]
    assert len(warnings) == 1


async def test_unreachable_server(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="inference_club.agent.discovery")
    config = make_config([{"type": "stt", "url": "http://127.0.0.1:9/v1", "models": [{"id": "whisper"}]}])
    catalog = Catalog(config.services)
    async with httpx.AsyncClient(trust_env=False) as client:
        discovery = Discovery(catalog, client, timeout_s=2)
        await discovery.refresh()
        await discovery.refresh()
    assert ids(catalog) == ["whisper"]
    assert catalog.services[0].reachable is False
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1


async def test_run_repolls_until_stopped() -> None:
    stub = EngineStub(["a"])
    async with serve_app(stub) as base:
        config = make_config([{"type": "llm", "url": f"{base}/v1"}])
        catalog = Catalog(config.services)
        changed = asyncio.Event()
        async with httpx.AsyncClient(trust_env=False) as client:
            discovery = Discovery(catalog, client, interval_s=0.05, timeout_s=1, on_change=changed.set)
            await discovery.refresh()
            changed.clear()
            stop = asyncio.Event()
            task = asyncio.create_task(discovery.run(stop))
            stub.models.append("b")
            async with asyncio.timeout(2):
                await changed.wait()
            assert ids(catalog) == ["a", "b"]
            stop.set()
            async with asyncio.timeout(2):
                await task


def test_an_unknown_engine_disables_only_its_service() -> None:
    catalog = Catalog(
        [
            ServiceConfig(type="image", url="http://127.0.0.1:1", engine="warp"),
            ServiceConfig(type="llm", url="http://127.0.0.1:1", engine="openai"),
        ]
    )
    assert catalog.services[0].disabled and catalog.services[0].models == ()
    assert catalog.services[0].last_error is not None and "unknown engine" in catalog.services[0].last_error
    assert catalog.services[1].disabled is None
