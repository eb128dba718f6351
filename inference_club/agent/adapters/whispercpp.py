"""whisper.cpp server (``type = "stt"``): ``POST /inference`` with a multipart form.

Followed: ggml-org/whisper.cpp ``examples/server`` (v1.7): form fields ``file``,
``response_format`` (json, text, srt, verbose_json, vtt), ``temperature``,
``language``, ``prompt``; ``GET /health``. The server holds one model: the service
advertises the models declared in the agent config.

- ``json`` → ``{"text"}``; ``text``, ``srt``, ``vtt`` → the engine's text with a
  ``text/plain`` (``text/vtt`` for vtt) content type.
- ``verbose_json`` → OpenAI's shape: ``task``, ``language``, ``duration``, ``text``,
  ``segments`` (``id, seek, start, end, text, tokens, temperature, avg_logprob,
  compression_ratio, no_speech_prob``) and ``words`` when word timestamps were asked
  for (``timestamp_granularities[]=word``).
- The engine's 400 → client error; anything else → ``upstream_error``.

Not supported: translation (``/v1/audio/translations``), streaming transcripts,
progress (the server answers in one call) and interrupt (closing the connection is
all whisper.cpp offers).
"""

from __future__ import annotations

from typing import Any

import httpx

from ..engines import EngineListing
from .base import Adapter, Answer, EngineCall, EngineFailed, EngineRejected

__all__ = ["WhisperCppAdapter", "verbose_to_openai"]

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_PASSED = ("temperature", "language", "prompt")


class WhisperCppAdapter(Adapter):
    name = "whispercpp"
    service_types = ("stt",)
    routes = ("/v1/audio/transcriptions",)

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        return await self.probe(client, "/health", timeout=timeout)

    async def run(self, call: EngineCall) -> Answer:
        form = await call.form()
        upload = form.files.get("file")
        if upload is None:
            raise EngineRejected("'file' is required", param="file")
        fmt = form.fields.get("response_format") or "json"
        if fmt not in FORMATS:
            raise EngineRejected(
                f"'response_format' must be one of {', '.join(FORMATS)}", param="response_format"
            )
        words = any(v == "word" for k, v in form.fields.items() if k.startswith("timestamp_granularities"))
        fields = {"response_format": "verbose_json" if fmt in ("json", "verbose_json") else fmt}
        for name in _PASSED:
            if form.fields.get(name):
                fields[name] = form.fields[name]
        call.report(0.0, "transcribing")
        filename, content_type, audio = upload
        response = await self.request(
            "POST", "/inference", files={"file": (filename, audio, content_type)}, data=fields
        )
        if fmt in ("text", "srt", "vtt"):
            self.raise_for_status(response, "the transcription")
            return Answer(
                response.content, "text/vtt; charset=utf-8" if fmt == "vtt" else "text/plain; charset=utf-8"
            )
        doc = await self.engine_json(response, "the transcription")
        if not isinstance(doc, dict):
            raise EngineFailed("the whisper.cpp server answered a transcription that is not an object")
        if isinstance(doc.get("error"), str):
            raise EngineRejected(f"the whisper.cpp server refused the audio: {doc['error']}")
        if fmt == "json":
            return Answer.json({"text": str(doc.get("text", "")).strip()})
        return Answer.json(verbose_to_openai(doc, words=words))


def verbose_to_openai(doc: dict[str, Any], *, words: bool) -> dict[str, Any]:
    """whisper.cpp's verbose_json → OpenAI's ``verbose_json`` transcription."""
    segments = []
    all_words: list[dict[str, Any]] = []
    for index, seg in enumerate(doc.get("segments") or []):
        if not isinstance(seg, dict):
            continue
        segments.append(
            {
                "id": seg.get("id", index),
                "seek": 0,
                "start": float(seg.get("start", 0.0)),
                "end": float(seg.get("end", 0.0)),
                "text": str(seg.get("text", "")),
                "tokens": [t for t in seg.get("tokens") or [] if isinstance(t, int)],
                "temperature": float(seg.get("temperature", 0.0)),
                "avg_logprob": float(seg.get("avg_logprob", 0.0)),
                "compression_ratio": float(seg.get("compression_ratio", 0.0)),
                "no_speech_prob": float(seg.get("no_speech_prob", 0.0)),
            }
        )
        for word in seg.get("words") or []:
            if isinstance(word, dict) and isinstance(word.get("word"), str):
                all_words.append(
                    {
                        "word": word["word"].strip(),
                        "start": float(word.get("start", 0.0)),
                        "end": float(word.get("end", 0.0)),
                    }
                )
    out: dict[str, Any] = {
        "task": doc.get("task", "transcribe"),
        "language": doc.get("language") or doc.get("detected_language") or "",
        "duration": float(doc.get("duration", segments[-1]["end"] if segments else 0.0)),
        "text": str(doc.get("text", "")).strip(),
        "segments": segments,
    }
    if words:
        out["words"] = all_words
    return out
