"""Hunyuan3D-2 and TRELLIS through hub + agent + stubs: GLB out with metadata, cancel, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.testing.fake_media import png_bytes
from inference_club.testing.servers import serve_app
from inference_club.testing.stubs.hunyuan3d import Hunyuan3DState, create_hunyuan3d
from inference_club.testing.stubs.trellis import TrellisState, create_trellis
from tests.integration.adapter_stack import EngineStack, adapter_hub, engine_stack, wait_for, wait_job


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[EngineStack, Hunyuan3DState, TrellisState]]:
    hunyuan, trellis = Hunyuan3DState(), TrellisState()
    for state in (hunyuan, trellis):
        state.control.step_delay_s = 0.02
    async with (
        adapter_hub(tmp_path) as hub,
        serve_app(create_trellis(trellis), shutdown_timeout_s=0.5) as t_url,
    ):
        async with engine_stack(
            hub,
            create_hunyuan3d(hunyuan),
            {
                "type": "mesh",
                "engine": "hunyuan3d",
                "timeout": 3,
                "poll_interval": 0.05,
                "models": [{"id": "hunyuan3d-2mini"}],
            },
            extra_services=[
                {
                    "type": "mesh",
                    "engine": "trellis",
                    "url": t_url,
                    "timeout": 3,
                    "poll_interval": 0.05,
                    "models": [{"id": "trellis-image-large"}],
                }
            ],
        ) as stack:
            yield stack, hunyuan, trellis


@pytest.mark.parametrize("model", ["hunyuan3d-2mini", "trellis-image-large"])
async def test_image_to_glb_with_metadata(
    mesh: tuple[EngineStack, Hunyuan3DState, TrellisState], model: str
) -> None:
    stack, _, _ = mesh
    async with stack.http() as http:
        answer = await http.post(
            "/v1/3d/generations",
            data={"model": model, "seed": "17"},
            files={"image": ("chair.png", png_bytes(8, 8), "image/png")},
        )
        assert answer.status_code == 200, answer.text
        item = answer.json()["data"][0]
        assert item["type"] == "model/gltf-binary"
        assert (item["seed"], item["vertices"], item["faces"]) == (17, 3, 1) and item["seconds"] >= 0
        glb = await http.get(item["url"])
        assert glb.headers["content-type"] == "model/gltf-binary" and glb.content[:4] == b"glTF"


async def test_text_prompts_and_errors(mesh: tuple[EngineStack, Hunyuan3DState, TrellisState]) -> None:
    stack, hunyuan, trellis = mesh
    async with stack.http() as http:
        text = await http.post(
            "/v1/3d/generations", json={"model": "trellis-image-large", "prompt": "a chair"}
        )
        assert text.status_code == 400 and text.json()["error"]["param"] == "image"
        hunyuan_text = await http.post(
            "/v1/3d/generations", json={"model": "hunyuan3d-2mini", "prompt": "a chair"}
        )
        assert hunyuan_text.status_code == 200, hunyuan_text.text
        assert hunyuan.control.bodies[-1] == {"seed": 1234, "texture": False, "text": "a chair"}
        trellis.control.fail = "out of memory"
        failed = await http.post(
            "/v1/3d/generations",
            data={"model": "trellis-image-large"},
            files={"image": ("c.png", png_bytes(4, 4), "image/png")},
        )
        assert failed.status_code == 502 and "out of memory" in failed.json()["error"]["message"]


@pytest.mark.slow
async def test_trellis_cancel_and_hunyuan_silence(
    mesh: tuple[EngineStack, Hunyuan3DState, TrellisState],
) -> None:
    stack, hunyuan, trellis = mesh
    trellis.control.gate = asyncio.Event()
    async with stack.http() as http:
        job_id = (
            await http.post(
                "/v1/3d/generations",
                json={
                    "model": "trellis-image-large",
                    "async": True,
                    "image": "data:image/png;base64,"
                    + __import__("base64").b64encode(png_bytes(4, 4)).decode(),
                },
            )
        ).json()
        assert "id" in job_id, job_id
        await wait_for(lambda: trellis.control.started.is_set(), what="the TRELLIS job to start")
        job = (await http.get(f"/v1/jobs/{job_id['id']}")).json()
        assert (await http.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 200
        await wait_for(lambda: trellis.control.cancelled, what="DELETE /api/jobs/{id}")
        trellis.control.gate.set()
        assert (await wait_job(http, job["id"]))["status"] == "CANCELED"
        hunyuan.control.hang = True
        stuck = await http.post(
            "/v1/3d/generations",
            data={"model": "hunyuan3d-2mini"},
            files={"image": ("c.png", png_bytes(4, 4), "image/png")},
        )
        assert stuck.status_code == 504 and stuck.json()["error"]["type"] == "upstream_error"
