"""A whisper.cpp server stub: ``POST /inference`` (multipart) and ``GET /health``, with the
answers of whisper.cpp ``examples/server`` (v1.7) for each ``response_format``.

The "transcript" is derived from the upload's size so tests can check it; a missing
``file`` is the server's 400 ``{"error": "no 'file' field in the request"}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .common import StubControl

__all__ = ["WhisperState", "create_whispercpp", "transcript_for"]


@dataclass
class WhisperState:
    control: StubControl = field(default_factory=StubControl)


def transcript_for(size: int) -> str:
    return f"The audio had {size} bytes."


def _ts(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def create_whispercpp(state: WhisperState | None = None) -> Starlette:
    state = state or WhisperState()
    control = state.control

    async def inference(request: Request) -> Response:
        async with request.form() as form:
            upload = form.get("file")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            control.record("POST", "/inference", fields)
            if upload is None or isinstance(upload, str):
                return JSONResponse({"error": "no 'file' field in the request"}, status_code=400)
            data = await upload.read()
        if control.hang:
            await control.stall()
        if control.fail is not None:
            message, control.fail = control.fail, None
            return JSONResponse({"error": message}, status_code=500)
        text = transcript_for(len(data))
        words = text.split()
        segment = {
            "id": 0,
            "text": " " + text,
            "start": 0.0,
            "end": 2.0,
            "tokens": [50364, 440, 6278, 50464],
            "words": [
                {"word": " " + w, "start": i * 0.3, "end": i * 0.3 + 0.3, "t_dtw": -1, "probability": 0.9}
                for i, w in enumerate(words)
            ],
            "temperature": float(fields.get("temperature") or 0.0),
            "avg_logprob": -0.2,
            "no_speech_prob": 0.01,
        }
        fmt = fields.get("response_format", "json")
        if fmt == "text":
            return PlainTextResponse(text + "\n")
        if fmt == "srt":
            return PlainTextResponse(f"1\n{_ts(0, ',')} --> {_ts(2, ',')}\n {text}\n\n")
        if fmt == "vtt":
            return PlainTextResponse(
                f"WEBVTT\n\n{_ts(0, '.')} --> {_ts(2, '.')}\n {text}\n\n", media_type="text/vtt"
            )
        if fmt == "verbose_json":
            return JSONResponse(
                {
                    "task": "transcribe",
                    "language": fields.get("language") or "english",
                    "duration": 2.0,
                    "text": " " + text,
                    "segments": [segment],
                    "detected_language": "english",
                    "detected_language_probability": 0.97,
                    "language_probabilities": {"english": 0.97},
                }
            )
        return JSONResponse({"text": " " + text})

    async def health(request: Request) -> JSONResponse:
        control.record("GET", "/health")
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/inference", inference, methods=["POST"]), Route("/health", health)])
