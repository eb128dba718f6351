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
- Setting `replies`: `[substring, text]` pairs; a chat or completion whose prompt contains
  the substring answers that text (scripted LLM steps of a workflow).
- Counters: `stats.prompts` counts requests per prompt (last user message, `prompt` or
  `input`), so a test can tell how often each step reached the engine; `stats.image_inputs`
  counts video requests whose `image` decoded to a PNG or JPEG first frame.
"""

from __future__ import annotations

import argparse
import base64
import json
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
from inference_club.testing.fake_answers import (
    audio_reply,
    embedding,
    image_size,
    is_image,
    message_text,
    prompt_of,
    token_usage,
    transcription,
)
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
        prompt = prompt_of(body)
        if prompt is not None:
            self.state.stats.prompts[prompt] += 1
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
        ruled = next((text for part, text in self.state.settings.replies if part in echoed), None)
        return text_field(body, "fake_reply") or ruled or self.state.settings.reply or echoed

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
        texts = [message_text(message) for message in messages]
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
        usage = token_usage(sum(map(count_tokens, texts)), count_tokens(content) * n)
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
            data = {**head, "object": "chat.completion", "choices": choices, **self._usage_fields(usage)}
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
        usage = token_usage(sum(map(count_tokens, prompts)), sum(count_tokens(text) for text, _ in results))
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
            data = {**head, "object": "text_completion", "choices": choices, **self._usage_fields(usage)}
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
        style = self.state.settings.usage_style
        final_usage = style == "llamacpp" or (include_usage and style != "none")
        _, delay = self._stream_settings(body)
        slices = self._slices(text, body)

        def sse() -> Iterator[bytes]:
            last: dict[str, Any] = {}
            for event in events(slices):
                last = event
                if include_usage:
                    event["usage"] = None
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            if final_usage:
                final = {**last, "choices": [], **self._usage_fields(usage)}
                yield b"data: " + json.dumps(final).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        reply = Reply(200, "text/event-stream; charset=utf-8", sse(), dict(_SSE_HEADERS), delay)
        return self.respond(request, model, reply, body)

    def _usage_fields(self, usage: dict[str, int]) -> dict[str, Any]:
        """The usage part of an answer or final chunk, in the configured engine's shape."""
        style = self.state.settings.usage_style
        if style == "none":
            return {}
        if style == "vllm":
            detailed = {
                **usage,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "accepted_prediction_tokens": 0},
            }
            return {"usage": detailed, "kv_transfer_params": None}
        if style == "llamacpp":
            timings = {
                "prompt_n": usage["prompt_tokens"],
                "predicted_n": usage["completion_tokens"],
                "prompt_ms": 1.5,
                "predicted_ms": 9.25,
            }
            return {"usage": usage, "timings": timings}
        return {"usage": usage}

    # responses (the Responses API)

    async def responses(self, request: Request) -> Playback:
        if not self.state.settings.responses_api:
            return self.respond(request, "-", Reply.json({"detail": "Not Found"}, 404), {})
        body = await json_body(request)
        model = requested_model(body, self.state)
        given = body.get("input")
        if isinstance(given, str):
            texts = [given]
        elif isinstance(given, list) and given:
            texts = [
                message_text(item) if isinstance(item, dict) and "role" in item else "" for item in given
            ]
        else:
            raise ApiError(400, "'input' must be a string or a non-empty array", "input")
        content, _ = self._limit(
            self._reply_text(body, texts[-1]), {"max_tokens": body.get("max_output_tokens")}
        )
        prompt_tokens, output_tokens = sum(map(count_tokens, texts)), count_tokens(content)
        response_id, item_id = f"resp_{uuid.uuid4().hex[:24]}", f"msg_{uuid.uuid4().hex[:24]}"

        def response(status: str, text: str | None) -> dict[str, Any]:
            done = text is not None
            output = (
                [
                    {
                        "type": "message",
                        "id": item_id,
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ]
                if done
                else []
            )
            usage = {
                "input_tokens": prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt_tokens + output_tokens,
            }
            return {
                "id": response_id,
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "error": None,
                "incomplete_details": None,
                "instructions": None,
                "metadata": {},
                "temperature": 1.0,
                "top_p": 1.0,
                "usage": usage if done and self.state.settings.usage_style != "none" else None,
            }

        if not body.get("stream"):
            return self.respond(request, model, Reply.json(response("completed", content)), body)
        _, delay = self._stream_settings(body)
        slices = self._slices(content, body)

        def sse() -> Iterator[bytes]:
            part = {"type": "output_text", "text": "", "annotations": []}
            item = {
                "type": "message",
                "id": item_id,
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            where = {"item_id": item_id, "output_index": 0, "content_index": 0}
            events: list[dict[str, Any]] = [
                {"type": "response.created", "response": response("in_progress", None)},
                {"type": "response.output_item.added", "output_index": 0, "item": item},
                {"type": "response.content_part.added", **where, "part": part},
                *({"type": "response.output_text.delta", **where, "delta": piece} for piece in slices),
                {"type": "response.output_text.done", **where, "text": content},
                {"type": "response.content_part.done", **where, "part": {**part, "text": content}},
                {
                    "type": "response.output_item.done",
                    "output_index": 0,
                    "item": {**item, "status": "completed", "content": [{**part, "text": content}]},
                },
                {"type": "response.completed", "response": response("completed", content)},
            ]
            for number, event in enumerate(events):
                event["sequence_number"] = number
                yield f"event: {event['type']}\ndata: ".encode() + json.dumps(event).encode() + b"\n\n"

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
            vector = embedding(text, size)
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
            reply = transcription(name, data, response_format, language, granularities)
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
        reply = audio_reply(audio_format, duration, seed, media_size(body, self.state))
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
        reply = audio_reply(audio_format, duration, seed, media_size(body, self.state))
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
            reply = audio_reply("wav", duration, seed, media_size(form, self.state))
            reply.headers["x-fake-received"] = ";".join(received)
            return self.respond(request, model, reply, form)

    async def video(self, request: Request) -> Playback:
        body = await json_body(request)
        model = requested_model(body, self.state)
        prompt = text_field(body, "prompt")
        image = body.get("image")
        if not prompt and not image:
            raise ApiError(400, "'prompt' or 'image' is required", "prompt")
        if image is not None:
            self.state.stats.image_inputs += is_image(image)
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
        width, height = image_size(text_field(body, "size"), (256, 256))
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
            width, height = image_size(text_field(form, "size"), first_size)
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
        Route("/responses", engine.responses, methods=["POST"]),
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
