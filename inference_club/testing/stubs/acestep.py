"""An ACE-Step 1.5 API server stub: ``/release_task``, ``/query_result``, ``/v1/audio``,
``/v1/models``, ``/v1/stats``, ``/health``, with the wrapper and task shapes of
ACE-Step-1.5's ``docs/en/API.md``.

A task stays queued (status 0) for one poll, runs for ``steps`` x ``step_delay_s``,
then succeeds (status 1) with a result whose ``file`` is a ``/v1/audio?path=`` URL, or
fails (status 2) when ``control.fail`` is set. There is no cancel call (the real server
has none).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..fake_media import wav_bytes
from .common import StubControl

__all__ = ["AceStepState", "create_acestep"]

MODELS = ["acestep-v15-turbo", "acestep-v15-turbo-shift3"]
_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}


@dataclass
class AceStepState:
    control: StubControl = field(default_factory=StubControl)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    jobs: set[asyncio.Task[None]] = field(default_factory=set)


def _wrap(data: Any, code: int = 200, error: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"data": data, "code": code, "error": error, "timestamp": int(time.time() * 1000), "extra": None}
    )


def create_acestep(state: AceStepState | None = None) -> Starlette:
    state = state or AceStepState()
    control = state.control

    async def release_task(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"detail": "Invalid JSON body"}, status_code=400)
        control.record("POST", "/release_task", body)
        fmt = body.get("audio_format", "mp3")
        if fmt not in _TYPES:
            return JSONResponse({"detail": f"Unsupported audio_format: {fmt}"}, status_code=400)
        duration = body.get("audio_duration", body.get("duration"))
        if duration is not None and not (isinstance(duration, int | float) and 10 <= duration <= 600):
            return JSONResponse(
                {"detail": "audio_duration must be between 10 and 600 seconds"}, status_code=400
            )
        if body.get("model") not in (None, *MODELS):
            return JSONResponse({"detail": f"Model not found: {body.get('model')}"}, status_code=400)
        task_id = str(uuid.uuid4())
        state.tasks[task_id] = {"status": 0, "queued": True, "body": body, "result": None}
        job = asyncio.get_running_loop().create_task(_run(state, task_id))
        state.jobs.add(job)
        job.add_done_callback(state.jobs.discard)
        return _wrap({"task_id": task_id, "status": "queued", "queue_position": 1})

    async def query_result(request: Request) -> JSONResponse:
        body = await request.json()
        control.record("POST", "/query_result", body)
        ids = body.get("task_id_list", [])
        if isinstance(ids, str):
            ids = json.loads(ids)
        items = []
        for task_id in ids:
            task = state.tasks.get(task_id)
            if task is None:
                continue
            if control.hang and task["status"] == 0:
                await control.stall()
            items.append({"task_id": task_id, "status": task["status"], "result": task["result"]})
        return _wrap(items)

    async def audio(request: Request) -> Response:
        path = request.query_params.get("path", "")
        control.record("GET", "/v1/audio")
        found = state.files.get(path)
        if found is None:
            return JSONResponse({"detail": "Audio file not found"}, status_code=404)
        return Response(found[0], media_type=found[1])

    async def models(request: Request) -> JSONResponse:
        control.record("GET", "/v1/models")
        return _wrap(
            {
                "models": [{"name": m, "is_default": i == 0} for i, m in enumerate(MODELS)],
                "default_model": MODELS[0],
            }
        )

    async def stats(request: Request) -> JSONResponse:
        control.record("GET", "/v1/stats")
        done = sum(1 for t in state.tasks.values() if t["status"] == 1)
        failed = sum(1 for t in state.tasks.values() if t["status"] == 2)
        running = sum(1 for t in state.tasks.values() if t["status"] == 0)
        return _wrap(
            {
                "jobs": {
                    "total": len(state.tasks),
                    "queued": 0,
                    "running": running,
                    "succeeded": done,
                    "failed": failed,
                },
                "queue_size": 0,
                "queue_maxsize": 200,
                "avg_job_seconds": max(control.steps * control.step_delay_s, 0.1),
            }
        )

    async def health(request: Request) -> JSONResponse:
        return _wrap({"status": "ok", "service": "ACE-Step API", "version": "1.0"})

    return Starlette(
        routes=[
            Route("/release_task", release_task, methods=["POST"]),
            Route("/query_result", query_result, methods=["POST"]),
            Route("/v1/audio", audio),
            Route("/v1/models", models),
            Route("/v1/stats", stats),
            Route("/health", health),
        ]
    )


async def _run(state: AceStepState, task_id: str) -> None:
    control = state.control
    task = state.tasks[task_id]
    body = task["body"]
    await asyncio.sleep(control.step_delay_s)
    control.started.set()
    for index in range(1, control.steps + 1):
        await control.step(index)
    if control.fail is not None:
        message, control.fail = control.fail, None
        task["status"] = 2
        task["result"] = json.dumps(
            [
                {
                    "file": "",
                    "wave": "",
                    "status": 2,
                    "create_time": int(time.time()),
                    "env": "development",
                    "prompt": body.get("prompt", ""),
                    "lyrics": body.get("lyrics", ""),
                    "error": message,
                }
            ]
        )
        return
    fmt = body.get("audio_format", "mp3")
    duration = float(body.get("audio_duration") or 30)
    path = f"/tmp/api_audio/{task_id}.{fmt}"
    seed = body.get("seed", 12345) if body.get("use_random_seed") is False else 12345
    state.files[path] = (wav_bytes(min(duration, 1.0), seed=int(seed)), _TYPES[fmt])
    task["status"] = 1
    task["result"] = json.dumps(
        [
            {
                "file": f"/v1/audio?path={path.replace('/', '%2F')}",
                "wave": "",
                "status": 1,
                "create_time": int(time.time()),
                "env": "development",
                "prompt": body.get("prompt", ""),
                "lyrics": body.get("lyrics", ""),
                "metas": {
                    "bpm": body.get("bpm") or 120,
                    "duration": duration,
                    "genres": "",
                    "keyscale": body.get("key_scale") or "C Major",
                    "timesignature": "4",
                },
                "generation_info": "stub",
                "seed_value": str(seed),
                "lm_model": "acestep-5Hz-lm-0.6B",
                "dit_model": body.get("model") or MODELS[0],
            }
        ]
    )
