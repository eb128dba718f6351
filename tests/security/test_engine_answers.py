"""Hostile engine answers: over-cap, endless and malformed answers fail clearly and leave nothing behind.

The hub here has caps of a few megabytes (``SMALL_CAPS``) so that every attack is cheap;
``test_engine_memory.py`` shows the memory bound at full size in a real hub process.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from inference_club.testing.hostile_engine import HostileEngine
from tests.conftest import RunningHub
from tests.integration.conftest import run_agent
from tests.security.conftest import SMALL_CAPS, client, register_direct

MODELS = {
    "image": ["hostile-image"],
    "mesh": ["hostile-mesh"],
    "llm": ["hostile-chat"],
    "tts": ["hostile-tts"],
}
ANSWER_CAP = SMALL_CAPS["max_answer_bytes"]


@dataclass
class Rig:
    hub: RunningHub
    key: str
    engine: HostileEngine

    def http(self) -> httpx.AsyncClient:
        return client(self.hub.base_url, self.key)

    def stored_files(self) -> list[str]:
        root = self.hub.settings.files_dir
        return [p.name for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture(params=["direct", "tunnel"])
async def rig(
    request: pytest.FixtureRequest, small_caps_hub: RunningHub, hostile: tuple[HostileEngine, str]
) -> AsyncIterator[Rig]:
    """The hostile engine as a direct provider (its own agent), or behind a real tunnel agent."""
    engine, url = hostile
    key = await small_caps_hub.new_user("victim")
    async with AsyncExitStack() as exits:
        if request.param == "direct":
            await register_direct(small_caps_hub.base_url, key, "hostile-rig", url, MODELS)
        else:
            services = [
                {
                    "type": kind,
                    "url": f"{url}/v1",
                    "discover": False,
                    "max_concurrency": 8,
                    "models": [{"id": m} for m in models],
                }
                for kind, models in MODELS.items()
            ]
            await exits.enter_async_context(
                run_agent(small_caps_hub.base_url, key, "hostile-rig", services, transport="tunnel")
            )
        yield Rig(small_caps_hub, key, engine)


def image(hostile: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "hostile-image", "prompt": "a cat", "hostile": hostile, **fields}


def assert_too_large(answer: httpx.Response, detail: str = f"answer larger than {ANSWER_CAP} bytes") -> None:
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["type"] == "upstream_error"
    assert detail in error["message"]


async def test_over_cap_and_endless_images_answers_fail_clearly_and_store_nothing(rig: Rig) -> None:
    async with rig.http() as http:
        answer = await http.post("/v1/images/generations", json=image({"bytes": ANSWER_CAP + 500_000}))
        assert_too_large(answer, f"answer larger than {ANSWER_CAP} bytes (IC_MAX_ANSWER_BYTES)")
        assert_too_large(await http.post("/v1/images/generations", json=image({"endless": True})))
        assert (await http.get("/v1/files")).json()["data"] == []
        assert rig.stored_files() == []
        # The hub stays usable: the next, honest answer goes through.
        assert (await http.post("/v1/images/generations", json=image({"bytes": 10_000}))).status_code == 200
    assert len(rig.stored_files()) == 1


async def test_a_media_file_over_its_cap_fails_while_writing(rig: Rig) -> None:
    # 1.8 MB of GLB bytes fit the answer cap, not IC_MAX_MEDIA_BYTES.
    async with rig.http() as http:
        answer = await http.post(
            "/v1/3d/generations",
            json={
                "model": "hostile-mesh",
                "prompt": "a teapot",
                "hostile": {"answer": "bytes", "bytes": 1_800_000},
            },
        )
        assert_too_large(
            answer, f"answer larger than {SMALL_CAPS['max_media_bytes']} bytes in one media file"
        )
    assert rig.stored_files() == []


async def test_malformed_media_answers_are_upstream_errors(rig: Rig) -> None:
    async with rig.http() as http:
        expected = {
            "base64": "invalid base64",
            "truncated": "dropped the answer",
            "not-json": "not valid JSON",
        }
        for malformed, message in expected.items():
            answer = await http.post(
                "/v1/images/generations", json=image({"bytes": 50_000, "malformed": malformed})
            )
            assert answer.status_code == 502, (malformed, answer.text)
            error = answer.json()["error"]
            assert error["type"] == "upstream_error", malformed
            assert message in error["message"], error
    assert rig.stored_files() == []


async def test_an_endless_sse_stream_ends_with_an_error_event(rig: Rig) -> None:
    async with (
        rig.http() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "hostile-chat",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
                "hostile": {"answer": "sse", "endless": True},
            },
        ) as answer,
    ):
        assert answer.status_code == 200
        received = 0
        tail = b""
        async for chunk in answer.aiter_bytes():
            received += len(chunk)
            tail = (tail + chunk)[-2000:]
    assert received <= ANSWER_CAP + 2000
    assert b"event: error" in tail and b"answer larger than" in tail


async def test_a_plain_answer_breaking_off_past_the_read_ahead_never_looks_complete(rig: Rig) -> None:
    # Not a stream, so the first 64 KiB are read ahead; the break comes after them.
    received = 0
    async with rig.http() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "hostile-chat",
                    "messages": [{"role": "user", "content": "hi"}],
                    "hostile": {"answer": "bytes", "bytes": 500_000, "malformed": "truncated"},
                },
            ) as answer:
                assert answer.status_code == 200 and answer.headers["transfer-encoding"] == "chunked"
                async for chunk in answer.aiter_bytes():
                    received += len(chunk)
        assert received <= 500_000
        ok = await http.post(
            "/v1/chat/completions",
            json={"model": "hostile-chat", "messages": [{"role": "user", "content": "hi"}], "hostile": {}},
        )
    assert ok.status_code == 200 and ok.headers["content-length"] == str(len(ok.content))


async def test_an_endless_media_stream_is_cut_off_and_not_stored(rig: Rig) -> None:
    received = 0
    async with rig.http() as http:
        with pytest.raises(httpx.HTTPError):
            async with http.stream(
                "POST",
                "/v1/audio/speech",
                json={
                    "model": "hostile-tts",
                    "input": "hello",
                    "voice": "x",
                    "hostile": {"answer": "bytes", "endless": True},
                },
            ) as answer:
                assert answer.status_code == 200
                async for chunk in answer.aiter_bytes():
                    received += len(chunk)
        assert received <= ANSWER_CAP
        assert (await http.get("/v1/files")).json()["data"] == []
    assert rig.stored_files() == []


async def test_a_valid_answer_round_trips_as_url_and_as_b64_json(rig: Rig) -> None:
    async with rig.http() as http:
        by_url = await http.post("/v1/images/generations", json=image({"bytes": 300_000}))
        assert by_url.status_code == 200, by_url.text
        item = by_url.json()["data"][0]
        assert item["revised_prompt"] == "hostile"
        content = (await http.get(item["url"])).content
        assert content.startswith(b"\x89PNG") and len(content) > 200_000
        inline = await http.post(
            "/v1/images/generations", json=image({"bytes": 300_000}, response_format="b64_json")
        )
        assert inline.status_code == 200, inline.text
        assert base64.b64decode(inline.json()["data"][0]["b64_json"]) == content


async def _job(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    queued = await http.post(path, json={**body, "async": True})
    assert queued.status_code == 202, queued.text
    job: dict[str, Any] = queued.json()
    for _ in range(6):  # generous on a loaded machine: up to two minutes
        job = (await http.get(f"/v1/jobs/{job['id']}", params={"wait": 20})).json()
        if job["status"] in ("PROCESSED", "FAILED", "CANCELED"):
            break
    return job


async def test_an_over_cap_async_job_fails_at_once_and_is_not_retried(rig: Rig) -> None:
    async with rig.http() as http:
        job = await _job(http, "/v1/images/generations", image({"endless": True}))
        assert job["status"] == "FAILED", job
        assert job["attempts"] == 1
        assert job["error"]["type"] == "upstream_error"
        assert "answer larger than" in job["error"]["message"]
        # A JSON answer kept whole (a chat job's result) has the JSON cap.
        chat = await _job(
            http,
            "/v1/chat/completions",
            {
                "model": "hostile-chat",
                "messages": [{"role": "user", "content": "hi"}],
                "hostile": {"answer": "images", "bytes": 200_000},
            },
        )
        assert chat["status"] == "FAILED" and chat["attempts"] == 1, chat
        assert (
            f"answer larger than {SMALL_CAPS['max_json_answer_bytes']} bytes of JSON"
            in chat["error"]["message"]
        )
    assert rig.engine.stats.requests == 2, rig.engine.stats


async def test_an_image_job_keeps_its_images_as_files(rig: Rig) -> None:
    async with rig.http() as http:
        job = await _job(http, "/v1/images/generations", image({"bytes": 40_000}, response_format="b64_json"))
        assert job["status"] == "PROCESSED", job
        data = job["result"]["data"][0]
        content = (await http.get(job["files"][0]["url"])).content
        assert base64.b64decode(data["b64_json"]) == content and content.startswith(b"\x89PNG")
