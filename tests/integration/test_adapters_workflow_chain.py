"""A workflow chains chat → ComfyUI image → ACE-Step music, end to end over the stubs."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from inference_club.testing.servers import serve_app
from inference_club.testing.stubs.acestep import AceStepState, create_acestep
from inference_club.testing.stubs.comfyui import ComfyState, create_comfyui
from tests.integration.adapter_stack import adapter_hub, engine_stack
from tests.integration.conftest import engine_server

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "comfyui-txt2img.json"
PLAN = {
    "music_prompt": "slow synths, rain",
    "lyrics": "[verse]\nrain on the roof",
    "cover_prompt": "a train at night",
}


@pytest.mark.slow
async def test_chat_then_comfyui_cover_then_acestep_song(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "txt2img.json")
    comfy, ace = ComfyState(), AceStepState()
    comfy.control.step_delay_s = ace.control.step_delay_s = 0.02
    async with (
        adapter_hub(tmp_path) as hub,
        engine_server() as (chat, chat_url),
        serve_app(create_acestep(ace), shutdown_timeout_s=0.5) as ace_url,
    ):
        chat.settings.replies = [["song about", orjson.dumps(PLAN).decode()]]
        async with engine_stack(
            hub,
            create_comfyui(comfy),
            {
                "type": "image",
                "engine": "comfyui",
                "workflows": str(folder),
                "timeout": 10,
                "poll_interval": 0.1,
            },
            extra_services=[
                {"type": "llm", "url": f"{chat_url}/v1", "discover": False, "models": [{"id": "fake-chat"}]},
                {"type": "music", "engine": "acestep", "url": ace_url, "timeout": 10, "poll_interval": 0.05},
            ],
        ) as stack:
            spec = {
                "steps": [
                    {
                        "id": "plan",
                        "kind": "inference",
                        "type": "llm",
                        "model": "fake-chat",
                        "extract": "json",
                        "body": {"prompt": "Plan a song about {{inputs.topic}} as JSON"},
                    },
                    {
                        "id": "cover",
                        "kind": "inference",
                        "type": "image",
                        "model": "txt2img",
                        "body": {"prompt": "{{steps.plan.output.cover_prompt}}", "size": "64x64"},
                    },
                    {
                        "id": "song",
                        "kind": "inference",
                        "type": "music",
                        "model": "acestep-v15-turbo",
                        "body": {
                            "prompt": "{{steps.plan.output.music_prompt}}",
                            "lyrics": "{{steps.plan.output.lyrics}}",
                            "duration": 20,
                        },
                    },
                ]
            }
            async with stack.http() as http:
                created = await http.post(
                    "/v1/workflows/runs", json={"spec": spec, "inputs": {"topic": "trains"}}
                )
                assert created.status_code == 202, created.text
                run = (
                    await http.get(f"/v1/workflows/runs/{created.json()['id']}", params={"wait": 60})
                ).json()
                assert run["status"] == "DONE", run
                types = sorted(f["content_type"] for f in run["files"])
                assert types == ["audio/mpeg", "image/png"]
                for file in run["files"]:
                    assert (await http.get(file["url"])).status_code == 200
    sent = next(b for b in comfy.control.bodies if isinstance(b, dict) and "client_id" in b)
    assert sent["prompt"]["6"]["inputs"]["text"] == "a train at night"
    task = next(b for b in ace.control.bodies if isinstance(b, dict) and "audio_format" in b)
    assert (task["prompt"], task["lyrics"], task["audio_duration"]) == (
        "slow synths, rain",
        PLAN["lyrics"],
        20.0,
    )
