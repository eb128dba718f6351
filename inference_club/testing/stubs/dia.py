"""A Dia-TTS-Server stub: ``POST /upload_reference``, ``POST /tts``,
``GET /api/ui/initial-data``, with the request and answer shapes of devnen/Dia-TTS-Server
v1.4 (``models.py`` ``CustomTTSRequest``).

``/tts`` answers WAV whose length grows with the text; clone mode needs a reference
file uploaded before (404 otherwise, as the server does), and the server's 400 for an
unknown ``voice_mode`` is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..fake_media import wav_bytes
from .common import StubControl

__all__ = ["DiaState", "create_dia"]

MODES = ("dialogue", "single_s1", "single_s2", "clone", "predefined")


@dataclass
class DiaState:
    control: StubControl = field(default_factory=StubControl)
    references: dict[str, bytes] = field(default_factory=dict)
    last_tts: dict[str, Any] | None = None


def create_dia(state: DiaState | None = None) -> Starlette:
    state = state or DiaState()
    control = state.control

    async def upload_reference(request: Request) -> JSONResponse:
        control.record("POST", "/upload_reference")
        uploaded, errors = [], []
        async with request.form() as form:
            for name, value in form.multi_items():
                if name != "files" or isinstance(value, str):
                    continue
                filename = value.filename or "reference.wav"
                if not filename.lower().endswith((".wav", ".mp3")):
                    errors.append(
                        {"filename": filename, "error": "Invalid file type. Only .wav and .mp3 allowed."}
                    )
                    continue
                state.references[filename] = await value.read()
                uploaded.append(filename)
        return JSONResponse(
            {
                "message": f"Processed {len(uploaded) + len(errors)} file(s).",
                "uploaded_files": uploaded,
                "all_reference_files": sorted(state.references),
                "errors": errors,
            }
        )

    async def tts(request: Request) -> Response:
        body = await request.json()
        control.record("POST", "/tts", body)
        state.last_tts = body
        if body.get("voice_mode", "dialogue") not in MODES:
            return JSONResponse({"detail": f"Invalid voice_mode: {body.get('voice_mode')}"}, status_code=400)
        if not isinstance(body.get("text"), str) or not body["text"].strip():
            return JSONResponse({"detail": "Text cannot be empty."}, status_code=400)
        if body.get("voice_mode") == "clone":
            name = body.get("clone_reference_filename")
            if not name:
                return JSONResponse(
                    {"detail": "Missing 'clone_reference_filename' for clone mode."}, status_code=400
                )
            if name not in state.references:
                return JSONResponse({"detail": f"Reference audio file not found: {name}"}, status_code=404)
        if control.hang:
            await control.stall()
        if control.fail is not None:
            message, control.fail = control.fail, None
            return JSONResponse({"detail": f"Speech generation failed: {message}"}, status_code=500)
        for _ in range(control.steps):
            await control.step()
        fmt = body.get("output_format", "opus")
        audio = wav_bytes(min(0.05 * len(body["text"]), 2.0), seed=int(body.get("seed") or 42))
        media = "audio/wav" if fmt == "wav" else "audio/opus"
        return Response(
            audio, media_type=media, headers={"content-disposition": f'attachment; filename="dia.{fmt}"'}
        )

    async def initial_data(request: Request) -> JSONResponse:
        control.record("GET", "/api/ui/initial-data")
        return JSONResponse(
            {
                "reference_files": sorted(state.references),
                "predefined_voices": [],
                "presets": [],
                "config": {},
            }
        )

    return Starlette(
        routes=[
            Route("/upload_reference", upload_reference, methods=["POST"]),
            Route("/tts", tts, methods=["POST"]),
            Route("/api/ui/initial-data", initial_data),
        ]
    )
