"""AUTOMATIC1111 / Forge / SD.Next (``type = "image"``): the ``/sdapi/v1`` API.

Followed: stable-diffusion-webui v1.10 ``modules/api/api.py`` and ``models.py``
(Forge and SD.Next serve the same routes): ``POST /sdapi/v1/txt2img``,
``POST /sdapi/v1/img2img``, ``GET /sdapi/v1/progress``, ``POST /sdapi/v1/interrupt``,
``GET /sdapi/v1/sd-models``.

- ``/v1/images/generations`` → txt2img: ``prompt``, ``negative_prompt``, ``size`` (or
  ``width``/``height``), ``n`` (``batch_size``), ``seed``, ``steps``; the model id is the
  checkpoint's ``model_name`` and goes in ``override_settings.sd_model_checkpoint``.
- ``/v1/images/edits`` → img2img with ``init_images`` and, when given, ``mask``
  (``strength`` → ``denoising_strength``, default 0.75).
- While the (blocking) generation call runs, ``/sdapi/v1/progress`` is polled every
  ``poll_interval`` for progress; cancel or timeout calls ``/sdapi/v1/interrupt``.
- Engine 422 (validation) and 404 → 4xx client error; 5xx → ``upstream_error``.

Not supported: samplers, hires-fix, scripts and other engine-only options.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from typing import Any

import httpx

from ..engines import DiscoveredModel, EngineListing
from .base import (
    Adapter,
    Answer,
    EngineCall,
    EngineFailed,
    EngineRejected,
    as_float,
    as_int,
    interrupting,
    parse_size,
)

__all__ = ["A1111Adapter"]


class A1111Adapter(Adapter):
    name = "a1111"
    service_types = ("image",)
    routes = ("/v1/images/generations", "/v1/images/edits")

    def __init__(self, service: Any, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(service, client)
        self.titles: dict[str, str] = {}

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        items, failed = await self.listing_json(client, "/sdapi/v1/sd-models", timeout=timeout)
        if failed is not None:
            return failed
        if not isinstance(items, list):
            return EngineListing(
                True, None, f"no checkpoint list in the answer of {self.base_url}/sdapi/v1/sd-models"
            )
        models = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("model_name"), str):
                self.titles[item["model_name"]] = str(item.get("title") or item["model_name"])
                models.append(DiscoveredModel(id=item["model_name"]))
        return EngineListing(True, tuple(models))

    async def run(self, call: EngineCall) -> Answer:
        if call.route == "/v1/images/edits":
            form = await call.form()
            data: dict[str, Any] = dict(form.fields)
            image = form.files.get("image") or form.files.get("image[]")
            if image is None:
                raise EngineRejected("'image' is required", param="image")
            payload = self._common(data)
            payload["init_images"] = [base64.b64encode(image[2]).decode()]
            mask = form.files.get("mask")
            if mask is not None:
                payload["mask"] = base64.b64encode(mask[2]).decode()
            strength = as_float(data.get("strength"), "strength")
            payload["denoising_strength"] = 0.75 if strength is None else strength
            path = "/sdapi/v1/img2img"
        else:
            payload = self._common(call.json())
            path = "/sdapi/v1/txt2img"
        started = int(time.time())
        answer = await self._generate(call, path, payload)
        images = answer.get("images") if isinstance(answer, dict) else None
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise EngineFailed("the a1111 server answered without an images list")
        # img2img with a mask may append the mask image; keep the generated ones
        wanted = payload.get("batch_size", 1)
        return Answer.json({"created": started, "data": [{"b64_json": i} for i in images[:wanted]]})

    def _common(self, data: dict[str, Any]) -> dict[str, Any]:
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise EngineRejected("'prompt' is required", param="prompt")
        width, height = parse_size(data.get("size"), (512, 512))
        payload: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": data.get("negative_prompt") or "",
            "width": as_int(data.get("width"), "width") or width,
            "height": as_int(data.get("height"), "height") or height,
            "batch_size": as_int(data.get("n"), "n") or 1,
            "n_iter": 1,
            "seed": as_int(data.get("seed"), "seed") if data.get("seed") is not None else -1,
            "send_images": True,
            "save_images": False,
        }
        steps = as_int(data.get("steps"), "steps")
        if steps is not None:
            payload["steps"] = steps
        model = data.get("model")
        if isinstance(model, str) and model:
            payload["override_settings"] = {"sd_model_checkpoint": self.titles.get(model, model)}
        return payload

    async def _generate(self, call: EngineCall, path: str, payload: dict[str, Any]) -> Any:
        async def interrupt() -> None:
            await self.request("POST", "/sdapi/v1/interrupt", timeout=5.0)

        call.report(0.0, "queued")
        async with interrupting(interrupt, what="generation"):
            task = asyncio.create_task(self.request("POST", path, json=payload))
            watcher = asyncio.create_task(self._watch(call))
            try:
                response = await task
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        if response.status_code == 422:
            raise EngineRejected(f"the a1111 server refused the parameters: {_detail(response)}")
        return await self.engine_json(response, path.rsplit("/", 1)[-1])

    async def _watch(self, call: EngineCall) -> None:
        while True:
            await asyncio.sleep(self.service.poll_interval_s)
            try:
                response = await self.request(
                    "GET", "/sdapi/v1/progress", params={"skip_current_image": "true"}, timeout=10.0
                )
                doc = response.json() if response.status_code == 200 else None
            except (EngineFailed, ValueError, Exception):
                continue
            if not isinstance(doc, dict):
                continue
            value = doc.get("progress")
            raw_state = doc.get("state")
            state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
            if isinstance(value, int | float):
                step, steps = state.get("sampling_step"), state.get("sampling_steps")
                stage = (
                    f"step {step}/{steps}" if isinstance(step, int) and isinstance(steps, int) else "sampling"
                )
                call.report(float(value), stage)


def _detail(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    detail = doc.get("detail") if isinstance(doc, dict) else None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}")
        return "; ".join(parts)[:300]
    return str(detail or doc)[:300]
