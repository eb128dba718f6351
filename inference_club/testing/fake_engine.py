"""A fake OpenAI-compatible engine that speaks the real wire format of every modality.

In process: `create_fake_engine(state)` with `servers.serve_app`; as a process:
`python -m inference_club.testing.fake_engine --host 127.0.0.1 --port P [--models ...]`.
Service URL: `http://host:port/v1`.

Answers are derived from the input so tests can check what arrived: chat and completions
echo the last user message / the prompt (unless `reply` is set), transcriptions name the
uploaded file's name, size and sha256, media sizes follow the request.

Test controls:
- `GET /_stats`, `POST /_reset` (counters), `GET|POST /_control` (settings and faults),
  the same as `state.stats`, `state.reset_stats()`, `state.apply_control()`.
- Per request, a header `x-fake-fault` or a body/form field `fake_fault` in the short form
  of `Fault.parse` (`"status=503"`, `"hang"`, `"stall=2"`, `"break=3"`, `"latency=0.5"`);
  body fields pass through a hub untouched, headers may not.
- Per request body fields: `fake_reply` (text), `fake_chunks` (stream content chunks),
  `fake_chunk_delay` (seconds between chunks), `fake_size_bytes` (media answer size).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import struct
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from inference_club.testing import fake_media
from inference_club.testing.fake_state import (
    DEFAULT_MODELS,
    FakeEngineSettings,
    FakeEngineState,
    FakeEngineStats,
    Fault,
)
from inference_club.testing.fake_wire import (
    RECORD_KEY,
    ApiError,
    Playback,
    Reply,
    RequestRecord,
    TrackingMiddleware,
    count_tokens,
    error_body,
    fault_reply,
    fingerprint,
    integer_field,
    json_body,
    media_size,
    number_field,
    pieces,
    read_upload,
    requested_model,
    split_even,
    text_field,
    text_inputs,
)

__all__ = [
    "DEFAULT_MODELS",
    "FakeEngineSettings",
    "FakeEngineState",
    "FakeEngineStats",
    "Fault",
    "create_fake_engine",
    "main",
]

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_AUDIO_TYPES = {
    # Only WAV and PCM are really encoded as named; the other formats get WAV bytes under
    # their usual label, which is enough to test content-type relaying.
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
}
_MEDIA_CACHE_SIZE = 64


# --- the engine -----------------------------------------------------------------------------


class _FakeEngine:
    def __init__(self, state: FakeEngineState) -> None:
        self.state = state
        self.media: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def respond(
        self, request: Request, model: str, reply: Reply, body: dict[str, Any] | FormData
    ) -> Playback:
        """Pick the fault for this request (its own first, then the configured ones)."""
        record: RequestRecord | None = request.scope.get(RECORD_KEY)
        if record is not None:
            record.set_model(model)
        spec = request.headers.get("x-fake-fault") or body.get("fake_fault")
        try:
            if isinstance(spec, dict):
                fault: Fault | None = Fault.from_json(spec)
            elif isinstance(spec, str) and spec:
                fault = Fault.parse(spec)
            else:
                fault = self.state.take_fault(request.url.path, model)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, str(exc), "fake_fault") from exc
        if fault is not None:
            self.state.stats.faults_applied += 1
            if fault.status is not None:
                reply = fault_reply(fault)
        return Playback(reply, fault)

    # chat and completions

    def _stream_settings(self, body: dict[str, Any]) -> tuple[int | None, float]:
        settings = self.state.settings
        chunks = integer_field(body, "fake_chunks", settings.stream_chunks or 0, 0, 100_000)
        delay = number_field(body, "fake_chunk_delay", settings.chunk_delay_s, 0, 60)
        return (chunks or None), delay

    def _reply_text(self, body: dict[str, Any], echoed: str) -> str:
        return text_field(body, "fake_reply") or self.state.settings.reply or echoed

    @staticmethod
    def _limit(text: str, body: dict[str, Any]) -> tuple[str, str]:
        """Apply `stop` and `max_tokens`; returns (text, finish_reason)."""
        stop = body.get("stop")
        markers = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
        for marker in markers:
            if isinstance(marker, str) and marker and marker in text:
                text = text[: text.index(marker)]
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and limit >= 0 and len(pieces(text)) > limit:
            return "".join(pieces(text)[:limit]), "length"
        return text, "stop"

    async def chat_completions(self, request: Request) -> Playback:
        body = await json_body(request)
        model = requested_model(body, self.state)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty array", "messages")
        texts = [_message_text(message) for message in messages]
        last_user = next(
            (
                text
                for message, text in zip(reversed(messages), reversed(texts), strict=True)
                if isinstance(message, dict) and message.get("role") == "user"
            ),
            "",
        )
        content, finish = self._limit(self._reply_text(body, last_user), body)
        n = integer_field(body, "n", 1, 1, 16)
        usage = _usage(sum(map(count_tokens, texts)), count_tokens(content) * n)
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fake-engine",
        }
        if not body.get("stream"):
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for i in range(n)
            ]
            data = {**head, "object": "chat.completion", "choices": choices, "usage": usage}
            return self.respond(request, model, Reply.json(data), body)

        def chunk(index: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**head, "object": "chat.completion.chunk", "choices": [choice]}

        def events(slices: list[str]) -> Iterator[dict[str, Any]]:
            for i in range(n):
                yield chunk(i, {"role": "assistant", "content": ""}, None)
            for piece in slices:
                for i in range(n):
                    yield chunk(i, {"content": piece}, None)
            for i in range(n):
                yield chunk(i, {}, finish)

        return self._stream(request, model, body, content, events, usage)

    async def completions(self, request: Request) -> Playback:
        body = await json_body(request)
        model = requested_model(body, self.state)
        prompts = text_inputs(body.get("prompt"), "prompt")
        results = [self._limit(self._reply_text(body, p), body) for p in prompts]
        usage = _usage(sum(map(count_tokens, prompts)), sum(count_tokens(text) for text, _ in results))
        head = {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fake-engine",
        }
        if not body.get("stream"):
            choices = [
                {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                for i, (text, finish) in enumerate(results)
            ]
            data = {**head, "object": "text_completion", "choices": choices, "usage": usage}
            return self.respond(request, model, Reply.json(data), body)

        def chunk(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}
            return {**head, "object": "text_completion", "choices": [choice]}

        def events(slices: list[str]) -> Iterator[dict[str, Any]]:
            # Every prompt streams the same number of chunks, sliced from its own text.
            per_prompt = [self._slices(text, body, len(slices)) for text, _ in results]
            for position in range(len(slices)):
                for i, prompt_slices in enumerate(per_prompt):
                    yield chunk(i, prompt_slices[position], None)
            for i, (_, finish) in enumerate(results):
                yield chunk(i, "", finish)

        return self._stream(request, model, body, results[0][0], events, usage)

    def _slices(self, text: str, body: dict[str, Any], count: int | None = None) -> list[str]:
        chunks, _ = self._stream_settings(body)
        if count is None and chunks is None:
            return pieces(text) or [""]
        return split_even(text, count or chunks or 1)

    def _stream(
        self,
        request: Request,
        model: str,
        body: dict[str, Any],
        text: str,
        events: Callable[[list[str]], Iterator[dict[str, Any]]],
        usage: dict[str, int],
    ) -> Playback:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        _, delay = self._stream_settings(body)
        slices = self._slices(text, body)

        def sse() -> Iterator[bytes]:
            last: dict[str, Any] = {}
            for event in events(slices):
                last = event
                if include_usage:
                    event["usage"] = None
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            if include_usage:
                final = {**last, "choices": [], "usage": usage}
                yield b"data: " + json.dumps(final).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        reply = Reply(200, "text/event-stream; charset=utf-8", sse(), dict(_SSE_HEADERS), delay)
        return self.respond(request, model, reply, body)

    # embeddings

    async def embeddings(self, request: Request) -> Playback:
        body = await json_body(request)
        model = requested_model(body, self.state)
        inputs = text_inputs(body.get("input"), "input")
        size = integer_field(body, "dimensions", self.state.settings.embedding_dimensions, 1, 8192)
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(400, "'encoding_format' must be float or base64", "encoding_format")
        data = []
        for index, text in enumerate(inputs):
            vector = _embedding(text, size)
            encoded: Any = vector
            if encoding == "base64":
                encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(map(count_tokens, inputs))
        answer = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self.respond(request, model, Reply.json(answer), body)

    # speech to text

    async def transcriptions(self, request: Request) -> Playback:
        async with request.form() as form:
            model = requested_model(form, self.state)
            upload = await read_upload(form, "file")
            if upload is None:
                raise ApiError(400, "'file' is required (a multipart file part)", "file")
            name, data = upload
            response_format = text_field(form, "response_format") or "json"
            language = text_field(form, "language") or "en"
            granularities = [str(g) for g in form.getlist("timestamp_granularities[]")]
            reply = _transcription(name, data, response_format, language, granularities)
            return self.respond(request, model, reply, form)

    # text to speech, music, voice cloning, video

    async def speech(self, request: Request) -> Playback:
        body = await json_body(request)
        model = requested_model(body, self.state)
        text = text_field(body, "input", required=True)
        speed = number_field(body, "speed", 1.0, 0.25, 4.0)
        audio_format = text_field(body, "response_format") or "mp3"
        seed = fake_media.seed_from(text, body.get("voice"))
        duration = min(60.0, max(0.1, 0.06 * len(text))) / speed
        reply = _audio_reply(audio_format, duration, seed, media_size(body, self.state))
        return self.respond(request, model, reply, body)

    async def voices(self, request: Request) -> JSONResponse:
        return JSONResponse({"voices": list(self.state.settings.voices)})

    async def music(self, request: Request) -> Playback:
        body = await json_body(request)
        model = requested_model(body, self.state)
        prompt = text_field(body, "prompt") or text_field(body, "lyrics")
        duration = number_field(body, "duration", 1.0, 0.1, 600)
        seed = fake_media.seed_from(prompt, body.get("seed"))
        audio_format = text_field(body, "format") or "wav"
        reply = _audio_reply(audio_format, duration, seed, media_size(body, self.state))
        return self.respond(request, model, reply, body)

    async def voice(self, request: Request) -> Playback:
        async with request.form() as form:
            model = requested_model(form, self.state, required=False)
            script = text_field(form, "input", required=True)
            received = []
            for speaker in ("S1", "S2"):
                upload = await read_upload(form, f"speaker_{speaker}")
                if upload is not None:
                    received.append(f"speaker_{speaker}={len(upload[1])}:{fingerprint(upload[1])}")
                transcript = text_field(form, f"transcript_{speaker}")
                if transcript:
                    received.append(f"transcript_{speaker}={len(transcript)}")
            seed = fake_media.seed_from(script, form.get("seed"))
            duration = min(60.0, max(0.1, 0.06 * len(script)))
            reply = _audio_reply("wav", duration, seed, media_size(form, self.state))
            reply.headers["x-fake-received"] = ";".join(received)
            return self.respond(request, model, reply, form)

    async def video(self, request: Request) -> Playback:
        body = await json_body(request)
        model = requested_model(body, self.state)
        prompt = text_field(body, "prompt")
        if not prompt and not body.get("image"):
            raise ApiError(400, "'prompt' or 'image' is required", "prompt")
        duration = number_field(body, "duration", 2.0, 0.1, 600)
        size = media_size(body, self.state) or round(4096 * duration)
        seed = fake_media.seed_from(prompt, body.get("seed"))
        total = max(size, fake_media.MP4_MIN_SIZE)
        reply = Reply(200, "video/mp4", fake_media.mp4_chunks(size, duration, seed), content_length=total)
        return self.respond(request, model, reply, body)

    # images

    async def image_generations(self, request: Request) -> Playback:
        body = await json_body(request)
        model = requested_model(body, self.state)
        prompt = text_field(body, "prompt", required=True)
        width, height = _image_size(text_field(body, "size"), (256, 256))
        pngs = [
            fake_media.png_bytes(width, height, fake_media.seed_from(prompt, i))
            for i in range(integer_field(body, "n", 1, 1, 10))
        ]
        reply = self._images_reply(request, pngs, body, prompt)
        return self.respond(request, model, reply, body)

    async def image_edits(self, request: Request) -> Playback:
        async with request.form() as form:
            model = requested_model(form, self.state)
            images = [
                item
                for key in ("image", "image[]")
                for item in form.getlist(key)
                if isinstance(item, UploadFile)
            ]
            if not images:
                raise ApiError(400, "'image' is required (one or more files)", "image")
            prompt = text_field(form, "prompt", required=True)
            contents = [await image.read() for image in images]
            mask = await read_upload(form, "mask")
            first_size = fake_media.png_size(contents[0]) or (256, 256)
            width, height = _image_size(text_field(form, "size"), first_size)
            seed = fake_media.seed_from(prompt, *map(fingerprint, contents))
            pngs = [
                fake_media.png_bytes(width, height, seed + i)
                for i in range(integer_field(form, "n", 1, 1, 10))
            ]
            inputs = ", ".join(
                f"{image.filename} {len(data)} bytes {fingerprint(data)}"
                for image, data in zip(images, contents, strict=True)
            )
            note = f"{prompt} [edited {len(images)} image(s): {inputs}; mask: "
            note += f"{len(mask[1])} bytes]" if mask else "none]"
            reply = self._images_reply(request, pngs, form, note)
            return self.respond(request, model, reply, form)

    def _images_reply(
        self, request: Request, pngs: list[bytes], body: dict[str, Any] | FormData, note: str
    ) -> Reply:
        response_format = text_field(body, "response_format") or "url"
        if response_format not in ("url", "b64_json"):
            raise ApiError(400, "'response_format' must be url or b64_json", "response_format")
        data = []
        for png in pngs:
            item: dict[str, Any] = {"revised_prompt": note}
            if response_format == "b64_json":
                item["b64_json"] = base64.b64encode(png).decode()
            else:
                item["url"] = self._store_media(request, png, "image/png")
            data.append(item)
        return Reply.json({"created": int(time.time()), "data": data})

    def _store_media(self, request: Request, data: bytes, media_type: str) -> str:
        media_id = uuid.uuid4().hex
        self.media[media_id] = (media_type, data)
        while len(self.media) > _MEDIA_CACHE_SIZE:
            self.media.popitem(last=False)
        return str(request.url_for("media", media_id=media_id))

    async def media_file(self, request: Request) -> Response:
        found = self.media.get(request.path_params["media_id"])
        if found is None:
            return JSONResponse(error_body("no such media", 404), status_code=404)
        return Response(found[1], media_type=found[0])

    # 3D

    async def mesh(self, request: Request) -> Playback:
        body: dict[str, Any] | FormData
        if request.headers.get("content-type", "").startswith("multipart/"):
            body = await request.form()
            upload = await read_upload(body, "image")
            source = fingerprint(upload[1]) if upload else ""
        else:
            body = await json_body(request)
            source = ""
        try:
            model = requested_model(body, self.state)
            prompt = text_field(body, "prompt")
            if not prompt and not source:
                raise ApiError(400, "'prompt' or 'image' is required", "prompt")
            if (text_field(body, "format") or "glb") != "glb":
                raise ApiError(400, "only 'glb' is supported", "format")
            glb = fake_media.glb_bytes(fake_media.seed_from(prompt, source))
            if self.state.settings.mesh_format == "json":
                item = {"b64_json": base64.b64encode(glb).decode(), "type": "model/gltf-binary"}
                reply = Reply.json({"created": int(time.time()), "data": [item]})
            else:
                reply = Reply(200, "model/gltf-binary", [glb], content_length=len(glb))
            return self.respond(request, model, reply, body)
        finally:
            if isinstance(body, FormData):
                await body.close()

    # models and controls

    async def list_models(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {"object": "list", "data": [self._model_entry(m) for m in self.state.settings.models]}
        )

    async def get_model(self, request: Request) -> JSONResponse:
        model = request.path_params["model"]
        if model not in self.state.settings.models:
            body = error_body(f"The model `{model}` does not exist", 404, "model", "model_not_found")
            return JSONResponse(body, status_code=404)
        return JSONResponse(self._model_entry(model))

    def _model_entry(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self.state.started_at, "owned_by": "fake-engine"}

    async def stats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.state.stats.to_json())

    async def reset(self, request: Request) -> JSONResponse:
        self.state.reset_stats()
        return JSONResponse(self.state.stats.to_json())

    async def control(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                self.state.apply_control(await json_body(request))
            except (TypeError, ValueError) as exc:
                return JSONResponse({"detail": str(exc)}, status_code=400)
        return JSONResponse(self.state.control_json())


# --- answer builders ------------------------------------------------------------------------


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        raise ApiError(400, "each message must be an object", "messages")
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _embedding(text: str, size: int) -> list[float]:
    """A unit vector derived from the text's hash: equal texts, equal vectors."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range((size + 7) // 8))
    values = [int.from_bytes(raw[4 * i : 4 * i + 4], "big") / 2**31 - 1.0 for i in range(size)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    # Rounded through float32 so float and base64 encodings carry the same numbers.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


def _image_size(size: str, default: tuple[int, int]) -> tuple[int, int]:
    if not size or size == "auto":
        return default
    match = re.fullmatch(r"(\d+)x(\d+)", size)
    if not match or not all(1 <= int(side) <= 4096 for side in match.groups()):
        raise ApiError(400, "'size' must look like 1024x1024 (sides up to 4096)", "size")
    return int(match[1]), int(match[2])


def _audio_reply(audio_format: str, duration: float, seed: int, size: int | None) -> Reply:
    media_type = _AUDIO_TYPES.get(audio_format)
    if media_type is None:
        raise ApiError(400, f"unsupported audio format {audio_format!r}", "response_format")
    if size is not None:
        samples = fake_media.wav_samples_for_size(size)
    else:
        samples = fake_media.wav_samples_for_duration(duration)
    if audio_format == "pcm":
        chunks = fake_media.pcm_chunks(samples, seed)
        length = samples * 2
    else:
        chunks = fake_media.wav_chunks(samples, seed)
        length = len(fake_media.wav_header(samples)) + samples * 2
    return Reply(200, media_type, chunks, content_length=length)


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02}:{minutes:02}:{rest // 1000:02}{separator}{rest % 1000:03}"


def _transcription(
    name: str, data: bytes, response_format: str, language: str, granularities: list[str]
) -> Reply:
    text = f"transcript of {name}: {len(data)} bytes, sha256 {fingerprint(data)}"
    duration = fake_media.wav_duration(data) or len(data) / 32_000
    if response_format == "json":
        return Reply.json({"text": text})
    if response_format == "text":
        return Reply.text(text + "\n")
    if response_format == "srt":
        return Reply.text(f"1\n{_timestamp(0, ',')} --> {_timestamp(duration, ',')}\n{text}\n\n")
    if response_format == "vtt":
        cue = f"{_timestamp(0, '.')} --> {_timestamp(duration, '.')}\n{text}\n\n"
        return Reply.text("WEBVTT\n\n" + cue, "text/vtt; charset=utf-8")
    if response_format != "verbose_json":
        raise ApiError(400, f"unsupported response_format {response_format!r}", "response_format")
    answer: dict[str, Any] = {"task": "transcribe", "language": language, "duration": duration, "text": text}
    if not granularities or "segment" in granularities:
        answer["segments"] = [
            {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": duration,
                "text": text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": -0.1,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0,
            }
        ]
    if "word" in granularities:
        words = text.split()
        step = duration / len(words)
        answer["words"] = [
            {"word": word, "start": i * step, "end": (i + 1) * step} for i, word in enumerate(words)
        ]
    return Reply.json(answer)


# --- app ------------------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body = error_body(exc.message, exc.status, exc.param, exc.code)
    return JSONResponse(body, status_code=exc.status)


def create_fake_engine(state: FakeEngineState | None = None) -> Starlette:
    """A fresh fake engine app; pass `state` to control and observe it from the test."""
    engine = _FakeEngine(state or FakeEngineState())
    v1 = [
        Route("/models", engine.list_models, methods=["GET"]),
        Route("/models/{model:path}", engine.get_model, methods=["GET"]),
        Route("/chat/completions", engine.chat_completions, methods=["POST"]),
        Route("/completions", engine.completions, methods=["POST"]),
        Route("/embeddings", engine.embeddings, methods=["POST"]),
        Route("/audio/transcriptions", engine.transcriptions, methods=["POST"]),
        Route("/audio/speech", engine.speech, methods=["POST"]),
        Route("/audio/voices", engine.voices, methods=["GET"]),
        Route("/images/generations", engine.image_generations, methods=["POST"]),
        Route("/images/edits", engine.image_edits, methods=["POST"]),
        Route("/music/generations", engine.music, methods=["POST"]),
        Route("/videos/generations", engine.video, methods=["POST"]),
        Route("/voice/generations", engine.voice, methods=["POST"]),
        Route("/3d/generations", engine.mesh, methods=["POST"]),
    ]
    routes = [
        Mount("/v1", routes=v1),
        Route("/_media/{media_id}", engine.media_file, methods=["GET"], name="media"),
        Route("/_stats", engine.stats, methods=["GET"]),
        Route("/_reset", engine.reset, methods=["POST"]),
        Route("/_control", engine.control, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={ApiError: _api_error})
    app.state.fake_engine = engine.state
    app.add_middleware(TrackingMiddleware, state=engine.state)
    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Run the fake OpenAI-compatible engine.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--strict-models", action="store_true")
    parser.add_argument("--mesh-format", choices=["glb", "json"], default="glb")
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--stream-chunks", type=int, default=None)
    parser.add_argument("--reply", default=None)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    settings = FakeEngineSettings(
        models=args.models,
        strict_models=args.strict_models,
        api_key=args.api_key,
        reply=args.reply,
        stream_chunks=args.stream_chunks,
        chunk_delay_s=args.chunk_delay,
        mesh_format=args.mesh_format,
    )
    app = create_fake_engine(FakeEngineState(settings))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
