"""Agent heartbeat: full and legacy payloads, ownership, callback URL checks."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import RunningHub, make_settings, running_hub

FULL = {
    "name": "home-rig",
    "transport": "direct",
    "callback_url": "http://127.0.0.1:9",
    "version": "0.1.0",
    "services": [
        {
            "type": "llm",
            "engine": "ollama",
            "max_concurrency": 2,
            "models": [{"id": "qwen3-8b", "context_length": 32768, "features": ["tools"]}],
        }
    ],
    "health": {"load": [0.1, 0.2, 0.3]},
}


def _http(hub: RunningHub, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"})


async def test_full_heartbeat_registers_models(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with _http(hub, key) as http:
        answer = await http.post("/api/inference/agent/heartbeat/", json=FULL)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["provider_id"].startswith("prov_") and body["online"] is True
        assert body["interval_s"] == 30 and body["online_window_s"] == 60 and body["agent_secret"]
        again = (await http.post("/api/inference/agent/heartbeat", json=FULL)).json()
        assert again["provider_id"] == body["provider_id"]
        models = (await http.get("/v1/models")).json()["data"]
        assert models == [
            {
                "id": "qwen3-8b",
                "object": "model",
                "created": models[0]["created"],
                "owned_by": "home-rig",
                "service_type": "llm",
                "service_types": ["llm"],
                "input_modalities": ["text"],
                "output_modalities": ["text"],
                "supported_features": ["tools"],
                "context_length": 32768,
                # the owner sees the engine's health the agent reported (none in this heartbeat)
                "engine": {"name": "ollama", "reachable": None, "busy": None, "last_error": None},
            }
        ]


async def test_legacy_heartbeat_becomes_llm(hub: RunningHub) -> None:
    key = await hub.new_user("alice")
    async with _http(hub, key) as http:
        legacy = {
            "name": "old-agent",
            "callback_url": "http://127.0.0.1:9",
            "models": [{"name": "llama3", "context_window": 8192}],
        }
        assert (await http.post("/api/inference/agent/heartbeat/", json=legacy)).status_code == 200
        models = (await http.get("/v1/models")).json()["data"]
        assert [(m["id"], m["service_type"], m["context_length"]) for m in models] == [
            ("llama3", "llm", 8192)
        ]


async def test_a_key_only_touches_its_own_providers(hub: RunningHub) -> None:
    alice = await hub.new_user("alice")
    bob = await hub.new_user("bob")
    async with _http(hub, alice) as a, _http(hub, bob) as b:
        first = (await a.post("/api/inference/agent/heartbeat/", json=FULL)).json()
        second = (await b.post("/api/inference/agent/heartbeat/", json={**FULL, "services": []})).json()
        assert first["provider_id"] != second["provider_id"]
        # Bob's heartbeat under the same name did not replace Alice's models.
        assert [m["id"] for m in (await a.get("/v1/models")).json()["data"]] == ["qwen3-8b"]
        assert (await b.get("/v1/models")).json()["data"] == []


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": "x", "transport": "carrier-pigeon"}, "transport"),
        ({"name": "x", "transport": "direct"}, "callback_url"),
        ({"name": "x", "callback_url": "ftp://h/"}, "callback_url"),
        ({"name": "x", "callback_url": "http://169.254.169.254/"}, "callback_url"),
        (
            {"name": "x", "callback_url": "http://127.0.0.1:9", "services": [{"type": "teleport"}]},
            "services.0.type",
        ),
        (
            {
                "name": "x",
                "callback_url": "http://127.0.0.1:9",
                "services": [{"type": "llm", "max_concurrency": "many"}],
            },
            "services.0.max_concurrency",
        ),
    ],
)
async def test_bad_heartbeats_are_400_naming_the_field(hub: RunningHub, payload: dict, param: str) -> None:  # type: ignore[type-arg]
    key = await hub.new_user("alice")
    async with _http(hub, key) as http:
        answer = await http.post("/api/inference/agent/heartbeat/", json=payload)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param


async def test_heartbeat_needs_a_key(hub: RunningHub) -> None:
    async with httpx.AsyncClient(base_url=hub.base_url) as http:
        answer = await http.post("/api/inference/agent/heartbeat/", json=FULL)
        assert answer.status_code == 401 and "detail" in answer.json()


async def test_callback_allow_and_deny_lists(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(
        tmp_path / "data", callback_allow_cidrs=["10.0.0.0/8"], callback_deny_cidrs=["10.9.0.0/16"]
    )
    async with running_hub(settings) as hub:
        key = await hub.new_user("alice")
        async with _http(hub, key) as http:
            outside = await http.post("/api/inference/agent/heartbeat/", json=FULL)
            assert outside.status_code == 400 and "blocked" in outside.json()["error"]["message"]
            denied = await http.post(
                "/api/inference/agent/heartbeat/", json={**FULL, "callback_url": "http://10.9.1.1:8000"}
            )
            assert denied.status_code == 400
            allowed = await http.post(
                "/api/inference/agent/heartbeat/", json={**FULL, "callback_url": "http://10.1.2.3:8000"}
            )
            assert allowed.status_code == 200


async def test_provider_goes_offline_after_the_window(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    async with running_hub(make_settings(tmp_path / "data", online_window_s=0.5)) as hub:
        key = await hub.new_user("alice")
        async with _http(hub, key) as http:
            await http.post("/api/inference/agent/heartbeat/", json=FULL)
            assert (await http.get("/v1/models")).json()["data"]
            await asyncio.sleep(0.7)
            assert (await http.get("/v1/models")).json()["data"] == []
            chat = await http.post(
                "/v1/chat/completions",
                json={"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert chat.status_code == 404 and chat.json()["error"]["type"] == "no_provider"


async def test_providers_survive_a_hub_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "data")
    async with running_hub(settings) as hub:
        key = await hub.new_user("alice")
        async with _http(hub, key) as http:
            await http.post("/api/inference/agent/heartbeat/", json=FULL)
    async with running_hub(settings) as again:
        async with _http(again, key) as http:
            assert [m["id"] for m in (await http.get("/v1/models")).json()["data"]] == ["qwen3-8b"]
