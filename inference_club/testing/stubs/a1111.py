"""An AUTOMATIC1111 stub: ``/sdapi/v1/txt2img``, ``img2img``, ``progress``, ``interrupt``,
``sd-models``, with the request and response models of stable-diffusion-webui v1.10.

Generation blocks for ``steps`` x ``step_delay_s`` (like the real server, which answers
only when done) while ``/sdapi/v1/progress`` reports the step; ``/sdapi/v1/interrupt``
ends the running generation early (the real server then answers with what it has).
Unknown fields are ignored like pydantic does there; a wrong type is a 422 with FastAPI's
``detail`` list; ``control.fail`` makes the next generation a 500 in the server's
``{"error", "detail", "body", "errors"}`` shape.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..fake_media import png_bytes
from .common import StubControl

__all__ = ["A1111State", "create_a1111"]

MODELS = [
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        "filename": "/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        "config": None,
    },
    {
        "title": "sdxl_base_1.0.safetensors [31e35c80fc]",
        "model_name": "sdxl_base_1.0",
        "hash": "31e35c80fc",
        "sha256": "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
        "filename": "/models/Stable-diffusion/sdxl_base_1.0.safetensors",
        "config": None,
    },
]


@dataclass
class A1111State:
    control: StubControl = field(default_factory=StubControl)
    step: int = 0
    steps: int = 0
    job: str = ""
    interrupted: bool = False
    checkpoint: str = MODELS[0]["title"]  # type: ignore[assignment]


def _unprocessable(field_name: str, message: str, kind: str) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": ["body", field_name], "msg": message, "type": kind}]}, status_code=422
    )


def create_a1111(state: A1111State | None = None) -> Starlette:
    state = state or A1111State()
    control = state.control

    async def generate(request: Request, mode: str) -> JSONResponse:
        body = await request.json()
        control.record("POST", f"/sdapi/v1/{mode}", body)
        for name in ("width", "height", "steps", "batch_size", "n_iter", "seed"):
            if name in body and not isinstance(body[name], int):
                return _unprocessable(name, "value is not a valid integer", "type_error.integer")
        if mode == "img2img" and not body.get("init_images"):
            return JSONResponse(
                {"error": "IndexError", "detail": "", "body": "", "errors": "list index out of range"},
                status_code=500,
            )
        checkpoint = (body.get("override_settings") or {}).get("sd_model_checkpoint")
        if checkpoint is not None and checkpoint not in [m["title"] for m in MODELS]:
            return JSONResponse(
                {
                    "error": "RuntimeError",
                    "detail": "",
                    "body": "",
                    "errors": f"model {checkpoint!r} not found",
                },
                status_code=500,
            )
        state.steps = int(body.get("steps") or 20 if "steps" in body else control.steps)
        state.step, state.interrupted, state.job = 0, False, "txt2img" if mode == "txt2img" else "img2img"
        control.started.set()
        try:
            for step in range(1, state.steps + 1):
                await control.step(step)
                if state.interrupted:
                    break
                state.step = step
            if control.fail is not None:
                message, control.fail = control.fail, None
                return JSONResponse(
                    {"error": "RuntimeError", "detail": "", "body": "", "errors": message}, status_code=500
                )
        finally:
            state.job = ""
        count = int(body.get("batch_size") or 1) * int(body.get("n_iter") or 1)
        width, height = int(body.get("width") or 512), int(body.get("height") or 512)
        images = [
            base64.b64encode(png_bytes(min(width, 64), min(height, 64), seed=i)).decode()
            for i in range(count)
        ]
        seed = body.get("seed", -1)
        info = {
            "prompt": body.get("prompt", ""),
            "all_prompts": [body.get("prompt", "")] * count,
            "negative_prompt": body.get("negative_prompt", ""),
            "seed": seed if seed != -1 else 1234,
            "all_seeds": [seed if seed != -1 else 1234] * count,
            "width": width,
            "height": height,
            "sampler_name": body.get("sampler_name") or "Euler a",
            "steps": state.steps,
            "sd_model_name": checkpoint or state.checkpoint,
        }
        parameters = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
        if mode == "img2img":
            parameters["init_images"] = None
            parameters["mask"] = None
        return JSONResponse({"images": images, "parameters": parameters, "info": json.dumps(info)})

    async def txt2img(request: Request) -> JSONResponse:
        return await generate(request, "txt2img")

    async def img2img(request: Request) -> JSONResponse:
        return await generate(request, "img2img")

    async def progress(request: Request) -> JSONResponse:
        control.record("GET", "/sdapi/v1/progress")
        if control.hang and state.job:
            await control.stall()
        fraction = state.step / state.steps if state.job and state.steps else 0.0
        return JSONResponse(
            {
                "progress": fraction,
                "eta_relative": 0.0 if not state.job else (state.steps - state.step) * control.step_delay_s,
                "state": {
                    "skipped": False,
                    "interrupted": state.interrupted,
                    "stopping_generation": False,
                    "job": state.job,
                    "job_count": 1 if state.job else 0,
                    "job_timestamp": "20250101000000",
                    "job_no": 0,
                    "sampling_step": state.step,
                    "sampling_steps": state.steps,
                },
                "current_image": None,
                "textinfo": None,
            }
        )

    async def interrupt(request: Request) -> JSONResponse:
        control.record("POST", "/sdapi/v1/interrupt")
        control.interrupts += 1
        state.interrupted = True
        return JSONResponse({})

    async def sd_models(request: Request) -> JSONResponse:
        control.record("GET", "/sdapi/v1/sd-models")
        return JSONResponse(MODELS)

    return Starlette(
        routes=[
            Route("/sdapi/v1/txt2img", txt2img, methods=["POST"]),
            Route("/sdapi/v1/img2img", img2img, methods=["POST"]),
            Route("/sdapi/v1/progress", progress),
            Route("/sdapi/v1/interrupt", interrupt, methods=["POST"]),
            Route("/sdapi/v1/sd-models", sd_models),
        ]
    )
