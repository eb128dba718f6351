"""A Hunyuan3D-2 ``api_server.py`` stub: ``POST /send``, ``GET /status/{uid}``,
``POST /generate``.

``/send`` answers ``{"uid"}`` at once and generates in the background for ``steps`` x
``step_delay_s``; ``/status/{uid}`` answers ``{"status": "processing"}`` until the GLB
exists, then ``{"status": "completed", "model_base64"}`` (the real server answers
"processing" for any uid it has no file for). Like the real server, a request with
neither image nor text fails (its worker raises; ``/generate`` answers 404 with
``{"text", "error_code": 1}``). The server has no cancel call.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..fake_media import glb_bytes
from .common import StubControl

__all__ = ["Hunyuan3DState", "create_hunyuan3d"]

SERVER_ERROR = "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**"


@dataclass
class Hunyuan3DState:
    control: StubControl = field(default_factory=StubControl)
    meshes: dict[str, bytes] = field(default_factory=dict)
    jobs: set[asyncio.Task[None]] = field(default_factory=set)


def create_hunyuan3d(state: Hunyuan3DState | None = None) -> Starlette:
    state = state or Hunyuan3DState()
    control = state.control

    async def make(params: dict[str, Any]) -> bytes:
        if "image" not in params and "text" not in params:
            raise ValueError("No input image or text provided")
        if "image" in params:
            base64.b64decode(params["image"], validate=True)
        control.started.set()
        for _ in range(control.steps):
            await control.step()
        return glb_bytes(seed=int(params.get("seed", 1234)))

    async def send(request: Request) -> JSONResponse:
        params = await request.json()
        control.record("POST", "/send", params)
        uid = str(uuid.uuid4())

        async def work() -> None:
            try:
                state.meshes[uid] = await make(params)
            except ValueError:
                pass  # the real worker thread dies; the status stays "processing"

        job = asyncio.get_running_loop().create_task(work())
        state.jobs.add(job)
        job.add_done_callback(state.jobs.discard)
        return JSONResponse({"uid": uid})

    async def status(request: Request) -> JSONResponse:
        uid = request.path_params["uid"]
        control.record("GET", f"/status/{uid}")
        if control.hang:
            await control.stall()
        mesh = state.meshes.get(uid)
        if mesh is None:
            return JSONResponse({"status": "processing"})
        return JSONResponse({"status": "completed", "model_base64": base64.b64encode(mesh).decode()})

    async def generate(request: Request) -> Response:
        params = await request.json()
        control.record("POST", "/generate", params)
        try:
            mesh = await make(params)
        except ValueError:
            return JSONResponse({"text": SERVER_ERROR, "error_code": 1}, status_code=404)
        return Response(mesh, media_type="model/gltf-binary")

    return Starlette(
        routes=[
            Route("/send", send, methods=["POST"]),
            Route("/status/{uid}", status),
            Route("/generate", generate, methods=["POST"]),
        ]
    )
