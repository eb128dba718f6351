"""Bad adapter configuration: said clearly at agent start, and the other services go on."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from inference_club.testing.fake_media import wav_bytes
from inference_club.testing.servers import free_port
from inference_club.testing.stubs.whispercpp import WhisperState, create_whispercpp
from tests.integration.adapter_stack import adapter_hub, engine_stack


async def test_bad_services_are_reported_and_the_rest_is_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "nomap.json").write_bytes(
        orjson.dumps({"workflow": {"1": {"class_type": "SaveImage", "inputs": {}}}})
    )
    dead = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO)
    async with adapter_hub(tmp_path) as hub:
        async with engine_stack(
            hub,
            create_whispercpp(WhisperState()),
            {"type": "stt", "engine": "whispercpp", "models": [{"id": "whisper-base"}]},
            extra_services=[
                {"type": "image", "engine": "stablediffusionx", "url": dead, "models": [{"id": "sdx"}]},
                {"type": "image", "engine": "comfyui", "url": dead, "workflows": str(folder)},
                {"type": "image", "engine": "a1111", "url": dead, "models": [{"id": "declared-ckpt"}]},
            ],
        ) as stack:
            messages = "\n".join(r.getMessage() for r in caplog.records)
            assert "unknown engine 'stablediffusionx'" in messages
            assert 'nomap.json: missing the "inputs" mapping' in messages
            assert "image#3" in messages and "is unreachable" in messages
            async with stack.http() as http:
                models = {m["id"]: m for m in (await http.get("/v1/models")).json()["data"]}
                assert "sdx" not in models  # the unknown engine advertises nothing
                assert models["declared-ckpt"]["engine"]["reachable"] is False
                assert models["declared-ckpt"]["engine"]["last_error"] == "unreachable"
                answer = await http.post(
                    "/v1/audio/transcriptions",
                    data={"model": "whisper-base"},
                    files={"file": ("a.wav", wav_bytes(0.1), "audio/wav")},
                )
                assert answer.status_code == 200, answer.text
                unreachable = await http.post(
                    "/v1/images/generations", json={"model": "declared-ckpt", "prompt": "x"}
                )
                assert unreachable.status_code == 502
                assert unreachable.json()["error"]["type"] == "upstream_error"
            health = stack.agent.catalog.services
            assert health[1].disabled is not None
            assert (health[1].last_error or "").startswith("unknown engine")
