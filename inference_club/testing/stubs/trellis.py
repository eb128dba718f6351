"""A TRELLIS API stub (dhruv-nayar/trellis-api 1.0.0): ``POST /api/convert``,
``GET /api/status/{job_id}``, ``GET /api/download/{job_id}``, ``DELETE /api/jobs/{job_id}``,
``GET /health``.

A job goes ``pending`` → ``processing`` (for ``steps`` x ``step_delay_s``) →
``completed``, or ``failed`` with ``error`` when ``control.fail`` is set. A non-image
upload is the server's 400 ``{"detail": "File must be an image"}``; ``DELETE`` removes
the job (later status calls are 404 ``Job not found``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..fake_media import glb_bytes
from .common import StubControl

__all__ = ["TrellisState", "create_trellis"]


@dataclass
class TrellisState:
    control: StubControl = field(default_factory=StubControl)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def create_trellis(state: TrellisState | None = None) -> Starlette:
    state = state or TrellisState()
    control = state.control

    async def convert(request: Request) -> JSONResponse:
        seed = int(request.query_params.get("seed", "1"))
        async with request.form() as form:
            upload = form.get("file")
            control.record("POST", "/api/convert", {"seed": seed})
            if upload is None or isinstance(upload, str):
                return JSONResponse(
                    {
                        "detail": [
                            {
                                "type": "missing",
                                "loc": ["body", "file"],
                                "msg": "Field required",
                                "input": None,
                            }
                        ]
                    },
                    status_code=422,
                )
            if not (upload.content_type or "").startswith("image/"):
                return JSONResponse({"detail": "File must be an image"}, status_code=400)
            await upload.read()
        job_id = str(uuid.uuid4())
        state.jobs[job_id] = {"status": "pending", "seed": seed}

        async def work() -> None:
            job = state.jobs[job_id]
            await asyncio.sleep(control.step_delay_s)
            if job_id not in state.jobs:
                return
            job.update(status="processing", message="Converting image to 3D...")
            control.started.set()
            for _ in range(control.steps):
                await control.step()
                if job_id not in state.jobs:
                    return
            if control.fail is not None:
                message, control.fail = control.fail, None
                job.update(status="failed", error=message, message="Conversion failed")
                return
            job.update(
                status="completed", message="Conversion completed successfully", glb=glb_bytes(seed=seed)
            )

        task = asyncio.get_running_loop().create_task(work())
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        return JSONResponse(
            {
                "job_id": job_id,
                "status": "pending",
                "message": "Image uploaded. Processing will begin shortly.",
                "download_url": None,
                "error": None,
            }
        )

    async def status(request: Request) -> JSONResponse:
        job_id = request.path_params["job_id"]
        control.record("GET", f"/api/status/{job_id}")
        if control.hang:
            await control.stall()
        job = state.jobs.get(job_id)
        if job is None:
            return JSONResponse({"detail": "Job not found"}, status_code=404)
        return JSONResponse(
            {
                "job_id": job_id,
                "status": job["status"],
                "message": job.get("message"),
                "download_url": f"/api/download/{job_id}" if job["status"] == "completed" else None,
                "error": job.get("error") if job["status"] == "failed" else None,
            }
        )

    async def download(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        control.record("GET", f"/api/download/{job_id}")
        job = state.jobs.get(job_id)
        if job is None:
            return JSONResponse({"detail": "Job not found"}, status_code=404)
        if job["status"] != "completed":
            return JSONResponse(
                {"detail": f"Job is {job['status']}, not ready for download"}, status_code=400
            )
        return Response(
            job["glb"],
            media_type="model/gltf-binary",
            headers={"content-disposition": f'attachment; filename="model_{job_id}.glb"'},
        )

    async def cancel(request: Request) -> JSONResponse:
        job_id = request.path_params["job_id"]
        control.record("DELETE", f"/api/jobs/{job_id}")
        if job_id not in state.jobs:
            return JSONResponse({"detail": "Job not found"}, status_code=404)
        del state.jobs[job_id]
        control.interrupts += 1
        control.cancelled.append(job_id)
        return JSONResponse({"message": f"Job {job_id} cancelled and cleaned up"})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "healthy"})

    return Starlette(
        routes=[
            Route("/api/convert", convert, methods=["POST"]),
            Route("/api/status/{job_id}", status),
            Route("/api/download/{job_id}", download),
            Route("/api/jobs/{job_id}", cancel, methods=["DELETE"]),
            Route("/health", health),
        ]
    )
