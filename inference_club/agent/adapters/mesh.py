"""3D engines (``type = "mesh"``): Hunyuan3D-2's API server and a TRELLIS API server.

Both answer ``/v1/3d/generations`` as ``{"created", "data": [{"b64_json", "seed",
"vertices", "faces", "seconds"}]}``: the GLB plus what the agent can tell about it
(vertex and face counts are read from the GLB's accessors).

**Hunyuan3D-2** — followed: Tencent-Hunyuan/Hunyuan3D-2 ``api_server.py`` (2.0 / 2mini /
2mv): ``POST /send`` with ``{"image": base64, "seed", "octree_resolution",
"num_inference_steps", "texture"}`` answers ``{"uid"}``; ``GET /status/{uid}`` answers
``{"status": "processing"}`` until ``{"status": "completed", "model_base64"}``. Text
prompts go as ``{"text"}``, which only a server with its text-to-image stage enabled
accepts (it answers 404 otherwise: a client error). Not supported: cancel (no such
call; the agent stops polling), progress beyond "generating".

**TRELLIS** — followed: dhruv-nayar/trellis-api 1.0.0 ``main.py`` (a FastAPI server for
microsoft/TRELLIS): ``POST /api/convert?seed=`` with a multipart ``file`` answers
``{"job_id", "status": "pending"}``; ``GET /api/status/{job_id}`` answers ``pending``,
``processing`` (with a ``message``), ``completed`` (``download_url``) or ``failed``
(``error``); ``GET /api/download/{job_id}`` is the GLB; ``DELETE /api/jobs/{job_id}``
cancels. Not supported: text prompts (image in only).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from typing import Any

import httpx

from ..engines import EngineListing
from .base import (
    Adapter,
    Answer,
    EngineCall,
    EngineFailed,
    EngineRejected,
    as_int,
    interrupting,
)

__all__ = ["Hunyuan3DAdapter", "TrellisAdapter", "glb_stats"]


def glb_stats(data: bytes) -> tuple[int, int]:
    """(vertices, faces) of a GLB: POSITION accessor counts and triangle indices / 3."""
    if len(data) < 20 or data[:4] != b"glTF":
        raise EngineFailed("the engine's mesh is not a GLB file")
    length = struct.unpack_from("<I", data, 8)[0]
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != 0x4E4F534A or 20 + chunk_length > min(length, len(data)):
        raise EngineFailed("the engine's GLB has no JSON chunk")
    try:
        doc = json.loads(data[20 : 20 + chunk_length])
    except ValueError:
        raise EngineFailed("the engine's GLB has an invalid JSON chunk") from None
    accessors = doc.get("accessors") or []
    vertices = faces = 0
    for mesh in doc.get("meshes") or []:
        for primitive in mesh.get("primitives") or []:
            position = primitive.get("attributes", {}).get("POSITION")
            count = _count(accessors, position)
            vertices += count
            indices = primitive.get("indices")
            faces += (_count(accessors, indices) if indices is not None else count) // 3
    return vertices, faces


def _count(accessors: list[Any], index: Any) -> int:
    if isinstance(index, int) and 0 <= index < len(accessors) and isinstance(accessors[index], dict):
        count = accessors[index].get("count")
        return count if isinstance(count, int) else 0
    return 0


def mesh_answer(glb: bytes, *, seed: int | None, started: float) -> Answer:
    vertices, faces = glb_stats(glb)
    return Answer.json(
        {
            "created": int(time.time()),
            "data": [
                {
                    "b64_json": base64.b64encode(glb).decode(),
                    "seed": seed,
                    "vertices": vertices,
                    "faces": faces,
                    "seconds": round(time.monotonic() - started, 3),
                }
            ],
        }
    )


async def mesh_inputs(call: EngineCall) -> tuple[bytes | None, str | None, dict[str, Any]]:
    """(image bytes, prompt, other fields) from a multipart or JSON request."""
    if call.content_type.startswith("multipart/"):
        form = await call.form()
        upload = form.files.get("image")
        return (upload[2] if upload else None), form.fields.get("prompt") or None, dict(form.fields)
    data = call.json()
    image_field = data.get("image")
    image = None
    if isinstance(image_field, str) and image_field:
        value = image_field.partition(",")[2] if image_field.startswith("data:") else image_field
        try:
            image = base64.b64decode(value, validate=True)
        except ValueError:
            raise EngineRejected("'image' must be a data URI or base64", param="image") from None
    prompt = data.get("prompt")
    return image, prompt if isinstance(prompt, str) and prompt else None, data


class Hunyuan3DAdapter(Adapter):
    name = "hunyuan3d"
    service_types = ("mesh",)
    routes = ("/v1/3d/generations",)

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        # the server has no model list and no health route: any HTTP answer means it is up
        try:
            await client.get(self.base_url + "/status/health-probe", headers=self.headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            return EngineListing(False, None, f"{type(exc).__name__} ({self.base_url})")
        return EngineListing(True, ())

    async def run(self, call: EngineCall) -> Answer:
        image, prompt, fields = await mesh_inputs(call)
        if image is None and prompt is None:
            raise EngineRejected("'image' (or 'prompt') is required", param="image")
        seed = as_int(fields.get("seed"), "seed")
        seed = 1234 if seed is None else seed
        params: dict[str, Any] = {
            "seed": seed,
            "texture": str(fields.get("texture", "")).lower() in ("1", "true"),
        }
        if image is not None:
            params["image"] = base64.b64encode(image).decode()
        else:
            params["text"] = prompt
        for name, key in (("steps", "num_inference_steps"), ("octree_resolution", "octree_resolution")):
            value = as_int(fields.get(name), name)
            if value is not None:
                params[key] = value
        started = time.monotonic()
        response = await self.request("POST", "/send", json=params)
        doc = await self.engine_json(response, "the generation")
        uid = doc.get("uid") if isinstance(doc, dict) else None
        if not isinstance(uid, str):
            raise EngineFailed("the Hunyuan3D server answered /send without a uid")
        call.report(0.0, "generating")
        while True:
            await asyncio.sleep(self.service.poll_interval_s)
            response = await self.request("GET", f"/status/{uid}")
            status = await self.engine_json(response, "the status")
            state = status.get("status") if isinstance(status, dict) else None
            if state == "completed":
                b64 = status.get("model_base64")
                if not isinstance(b64, str):
                    raise EngineFailed("the Hunyuan3D server completed without model_base64")
                try:
                    glb = base64.b64decode(b64, validate=True)
                except ValueError:
                    raise EngineFailed("the Hunyuan3D server sent invalid base64") from None
                return mesh_answer(glb, seed=seed, started=started)
            if state != "processing":
                raise EngineFailed(f"the Hunyuan3D server reported status {state!r}")
            call.report(min(0.95, (time.monotonic() - started) / 60.0), "generating")


class TrellisAdapter(Adapter):
    name = "trellis"
    service_types = ("mesh",)
    routes = ("/v1/3d/generations",)

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        return await self.probe(client, "/health", timeout=timeout)

    async def run(self, call: EngineCall) -> Answer:
        image, _, fields = await mesh_inputs(call)
        if image is None:
            raise EngineRejected(
                "the TRELLIS engine needs an 'image' (text prompts are not supported)", param="image"
            )
        seed = as_int(fields.get("seed"), "seed")
        seed = 1 if seed is None else seed
        started = time.monotonic()
        response = await self.request(
            "POST", "/api/convert", params={"seed": seed}, files={"file": ("input.png", image, "image/png")}
        )
        doc = await self.engine_json(response, "the conversion")
        job_id = doc.get("job_id") if isinstance(doc, dict) else None
        if not isinstance(job_id, str):
            raise EngineFailed("the TRELLIS server answered /api/convert without a job_id")

        async def cancel() -> None:
            await self.request("DELETE", f"/api/jobs/{job_id}", timeout=5.0)

        call.report(0.0, "pending")
        async with interrupting(cancel, what=f"job {job_id}"):
            while True:
                await asyncio.sleep(self.service.poll_interval_s)
                response = await self.request("GET", f"/api/status/{job_id}")
                status = await self.engine_json(response, "the status")
                state = status.get("status") if isinstance(status, dict) else None
                if state == "completed":
                    break
                if state == "failed":
                    raise EngineFailed(f"TRELLIS failed the job: {status.get('error') or 'no detail'}")
                if state not in ("pending", "processing"):
                    raise EngineFailed(f"the TRELLIS server reported status {state!r}")
                message = status.get("message") if isinstance(status.get("message"), str) else state
                call.report(0.1 if state == "processing" else 0.0, str(message))
            call.report(0.95, "downloading")
            response = await self.request("GET", f"/api/download/{job_id}")
            self.raise_for_status(response, "the download")
        return mesh_answer(response.content, seed=seed, started=started)
