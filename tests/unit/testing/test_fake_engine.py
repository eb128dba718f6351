"""The fake engine over a real socket, driven by the official openai SDK where it can be."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from inference_club.testing import fake_media
from inference_club.testing.fake_engine import (
    DEFAULT_MODELS,
    FakeEngineSettings,
    FakeEngineState,
    Fault,
    create_fake_engine,
)
from inference_club.testing.servers import ProcessHandle, free_port, serve_app

T = TypeVar("T")
CHAT_PATH = "/v1/chat/completions"


@dataclass
class Engine:
    state: FakeEngineState
    url: str  # base URL, no /v1

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def sync_client(self, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key="test", max_retries=0, **kwargs)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.v1, api_key="test", max_retries=0, **kwargs)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    state = FakeEngineState()
    async with serve_app(create_fake_engine(state), shutdown_timeout_s=0.5) as url:
        yield Engine(state, url)


async def in_thread(call: Callable[[], T]) -> T:
    """Run a blocking SDK call off the event loop that serves the engine."""
    return await asyncio.to_thread(call)


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-chat", "messages": [{"role": "user", "content": text}], **extra}


def sse_events(raw: bytes) -> list[str]:
    """`data:` payloads of an SSE body, checking the framing on the way."""
    blocks = raw.decode().split("\n\n")
    assert blocks[-1] == "", "an SSE body ends with a blank line"
    events = []
    for block in blocks[:-1]:
        assert block.startswith("data: "), block
        events.append(block.removeprefix("data: "))
    return events


# --- models, chat, completions, embeddings -----------------------------------------------


async def test_models_list_with_sync_client(engine: Engine) -> None:
    models = await in_thread(lambda: engine.sync_client().models.list())
    assert [m.id for m in models.data] == list(DEFAULT_MODELS)
    assert all(m.object == "model" and m.owned_by == "fake-engine" for m in models.data)
    one = await in_thread(lambda: engine.sync_client().models.retrieve("fake-tts"))
    assert one.id == "fake-tts"


async def test_chat_echoes_last_user_message(engine: Engine) -> None:
    messages: Any = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "the second question"}]},
    ]
    answer = await in_thread(
        lambda: engine.sync_client().chat.completions.create(model="fake-chat", messages=messages)
    )
    assert answer.object == "chat.completion"
    assert answer.model == "fake-chat"
    assert answer.choices[0].message.content == "the second question"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 3
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 3


async def test_chat_honours_max_tokens_stop_n_and_fake_reply(engine: Engine) -> None:
    client = engine.async_client()
    cut = await client.chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "one two three four"}], max_tokens=2
    )
    assert cut.choices[0].message.content == "one two "
    assert cut.choices[0].finish_reason == "length"
    stopped = await client.chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "alpha STOP beta"}], stop=["STOP"], n=2
    )
    assert [c.message.content for c in stopped.choices] == ["alpha ", "alpha "]
    fixed = await client.chat.completions.create(
        model="fake-chat",
        messages=[{"role": "user", "content": "ignored"}],
        extra_body={"fake_reply": '{"ok": true}'},
    )
    assert fixed.choices[0].message.content == '{"ok": true}'


async def test_chat_stream_with_usage(engine: Engine) -> None:
    stream = await engine.async_client().chat.completions.create(
        model="fake-chat",
        messages=[{"role": "user", "content": "stream these four words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "stream these four words"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


async def test_chat_stream_wire_format(engine: Engine) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(engine.v1 + "/chat/completions", json=chat_body("a b", stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    parsed = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in event for event in parsed)  # only with include_usage
    assert [e["choices"][0]["delta"].get("content") for e in parsed] == ["", "a ", "b", None]


async def test_stream_is_not_buffered(engine: Engine) -> None:
    body = chat_body("abcdefgh", stream=True, fake_chunks=4, fake_chunk_delay=0.2)
    arrivals: list[float] = []
    started = time.monotonic()
    async with (
        httpx.AsyncClient() as http,
        http.stream("POST", engine.v1 + "/chat/completions", json=body) as response,
    ):
        async for _ in response.aiter_raw():
            arrivals.append(time.monotonic() - started)
    # 1 role chunk + 4 content chunks + finish + [DONE], 0.2 s apart. A buffered stream
    # arrives in one burst; an unbuffered one keeps the engine's spacing, however slow the
    # machine is (no bound on absolute times).
    assert arrivals[-1] - arrivals[0] >= 0.8, "chunks must arrive as the engine sends them"
    assert len(arrivals) >= 5


async def test_completions_sync_and_stream(engine: Engine) -> None:
    client = engine.sync_client()
    answer = await in_thread(lambda: client.completions.create(model="fake-chat", prompt=["p one", "p two"]))
    assert answer.object == "text_completion"
    assert [c.text for c in answer.choices] == ["p one", "p two"]
    assert answer.usage is not None and answer.usage.prompt_tokens == 4

    def stream_text() -> str:
        chunks = client.completions.create(model="fake-chat", prompt="say it slowly", stream=True)
        return "".join(c.choices[0].text for c in chunks)

    assert await in_thread(stream_text) == "say it slowly"


async def test_embeddings_float_and_base64(engine: Engine) -> None:
    client = engine.async_client()
    # The SDK asks for base64 by default and decodes it itself.
    default = await client.embeddings.create(model="fake-embed", input=["same", "other", "same"])
    vectors = [item.embedding for item in default.data]
    assert len(vectors[0]) == 16
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert abs(sum(v * v for v in vectors[0]) - 1.0) < 1e-5
    floats = await client.embeddings.create(
        model="fake-embed", input="same", encoding_format="float", dimensions=8
    )
    assert len(floats.data[0].embedding) == 8
    async with httpx.AsyncClient() as http:
        raw = await http.post(
            engine.v1 + "/embeddings", json={"model": "e", "input": "same", "encoding_format": "base64"}
        )
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert list(struct.unpack("<16f", packed)) == vectors[0]


# --- audio ---------------------------------------------------------------------------------


async def test_transcriptions_all_formats(engine: Engine) -> None:
    audio = fake_media.wav_bytes(1.5, seed=1)
    digest = hashlib.sha256(audio).hexdigest()[:16]
    client = engine.sync_client()

    def transcribe(**kwargs: Any) -> Any:
        return client.audio.transcriptions.create(
            model="fake-whisper", file=("clip.wav", audio, "audio/wav"), **kwargs
        )

    as_json = await in_thread(transcribe)
    assert as_json.text == f"transcript of clip.wav: {len(audio)} bytes, sha256 {digest}"
    assert (await in_thread(lambda: transcribe(response_format="text"))).strip() == as_json.text
    srt = await in_thread(lambda: transcribe(response_format="srt"))
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\n")
    vtt = await in_thread(lambda: transcribe(response_format="vtt"))
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")
    verbose = await in_thread(
        lambda: transcribe(
            response_format="verbose_json", language="de", timestamp_granularities=["word", "segment"]
        )
    )
    assert verbose.language == "de" and verbose.duration == 1.5
    assert verbose.segments and verbose.segments[0].end == 1.5
    assert verbose.words and verbose.words[0].word == "transcript"
    last = engine.state.stats.last_request
    assert last is not None and last.body_size > len(audio)


async def test_transcription_without_file_is_400(engine: Engine) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(engine.v1 + "/audio/transcriptions", data={"model": "fake-whisper"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"


async def test_speech_and_voices(engine: Engine) -> None:
    client = engine.async_client()
    short = await client.audio.speech.create(
        model="fake-tts", voice="alloy", input="hi", response_format="wav"
    )
    long = await client.audio.speech.create(
        model="fake-tts", voice="alloy", input="a much longer sentence to say", response_format="wav"
    )
    assert short.response.headers["content-type"] == "audio/wav"
    assert short.content[:4] == b"RIFF" and short.content[8:12] == b"WAVE"
    assert len(long.content) > len(short.content)
    assert fake_media.wav_duration(long.content) == pytest.approx(0.06 * 29, abs=0.01)
    mp3 = await client.audio.speech.create(model="fake-tts", voice="alloy", input="hi")
    assert mp3.response.headers["content-type"] == "audio/mpeg"
    async with httpx.AsyncClient() as http:
        voices = await http.get(engine.v1 + "/audio/voices", params={"model": "fake-tts"})
    assert "alloy" in voices.json()["voices"]


async def test_music_and_voice_cloning(engine: Engine) -> None:
    async with httpx.AsyncClient() as http:
        music = await http.post(
            engine.v1 + "/music/generations",
            json={"model": "fake-music", "prompt": "calm", "duration": 0.5, "seed": 3},
        )
        sample = fake_media.wav_bytes(0.2)
        voice = await http.post(
            engine.v1 + "/voice/generations",
            data={"input": "[S1] hello [S2] hi", "transcript_S1": "hello there", "seed": "7"},
            files={"speaker_S1": ("s1.wav", sample, "audio/wav")},
        )
        missing = await http.post(engine.v1 + "/voice/generations", data={"seed": "1"}, files={})
    assert music.headers["content-type"] == "audio/wav"
    assert fake_media.wav_duration(music.content) == 0.5
    assert voice.status_code == 200 and voice.content[:4] == b"RIFF"
    received = voice.headers["x-fake-received"]
    assert f"speaker_S1={len(sample)}:{hashlib.sha256(sample).hexdigest()[:16]}" in received
    assert "transcript_S1=11" in received
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"


# --- images, video, 3D ------------------------------------------------------------------------


async def test_image_generation_b64_and_url(engine: Engine) -> None:
    client = engine.async_client()
    b64 = await client.images.generate(
        model="fake-image", prompt="a cat", n=2, size="64x32", response_format="b64_json"
    )
    assert b64.data is not None and len(b64.data) == 2
    pngs = [base64.b64decode(item.b64_json or "") for item in b64.data]
    assert [fake_media.png_size(png) for png in pngs] == [(64, 32), (64, 32)]
    assert pngs[0] != pngs[1]
    by_url = await client.images.generate(model="fake-image", prompt="a cat", response_format="url")
    assert by_url.data is not None and by_url.data[0].url is not None
    async with httpx.AsyncClient() as http:
        fetched = await http.get(by_url.data[0].url)
    assert fetched.headers["content-type"] == "image/png"
    assert fake_media.png_size(fetched.content) == (256, 256)


async def test_image_edits_with_several_images_and_mask(engine: Engine) -> None:
    first, second = fake_media.png_bytes(40, 20, 1), fake_media.png_bytes(8, 8, 2)
    mask = fake_media.png_bytes(40, 20, 3)
    edited = await in_thread(
        lambda: engine.sync_client().images.edit(
            model="fake-image",
            image=[("a.png", first, "image/png"), ("b.png", second, "image/png")],
            mask=("m.png", mask, "image/png"),
            prompt="make it blue",
            response_format="b64_json",
        )
    )
    assert edited.data is not None
    assert fake_media.png_size(base64.b64decode(edited.data[0].b64_json or "")) == (40, 20)
    note = edited.data[0].revised_prompt or ""
    assert "edited 2 image(s)" in note and f"a.png {len(first)} bytes" in note
    assert f"mask: {len(mask)} bytes" in note
    async with httpx.AsyncClient() as http:
        missing = await http.post(
            engine.v1 + "/images/edits", data={"model": "fake-image", "prompt": "x"}, files={}
        )
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "image"


async def test_video_is_mp4(engine: Engine) -> None:
    async with httpx.AsyncClient() as http:
        video = await http.post(
            engine.v1 + "/videos/generations", json={"model": "fake-video", "prompt": "waves"}
        )
    assert video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content)
    assert fake_media.mp4_boxes(video.content) == ["ftyp", "moov", "mdat"]


async def test_large_video_streams_in_chunks(engine: Engine) -> None:
    size = 100 * 1024 * 1024
    received = chunks = 0
    head = b""
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "POST",
            engine.v1 + "/videos/generations",
            json={"model": "fake-video", "prompt": "long", "fake_size_bytes": size},
        ) as response,
    ):
        assert int(response.headers["content-length"]) == size
        async for chunk in response.aiter_raw():
            head = head or chunk[:64]
            received += len(chunk)
            chunks += 1
    assert received == size and chunks > 100
    assert head[4:8] == b"ftyp"


async def test_mesh_glb_multipart_and_json(engine: Engine) -> None:
    async with httpx.AsyncClient() as http:
        from_prompt = await http.post(
            engine.v1 + "/3d/generations", json={"model": "fake-mesh", "prompt": "a cube"}
        )
        from_image = await http.post(
            engine.v1 + "/3d/generations",
            data={"model": "fake-mesh", "format": "glb"},
            files={"image": ("in.png", fake_media.png_bytes(4, 4), "image/png")},
        )
        engine.state.settings.mesh_format = "json"
        as_json = await http.post(
            engine.v1 + "/3d/generations", json={"model": "fake-mesh", "prompt": "a cube"}
        )
    for answer in (from_prompt, from_image):
        assert answer.headers["content-type"] == "model/gltf-binary"
        assert answer.content[:4] == b"glTF"
        assert struct.unpack("<II", answer.content[4:12]) == (2, len(answer.content))
    item = as_json.json()["data"][0]
    assert item["type"] == "model/gltf-binary"
    assert base64.b64decode(item["b64_json"]) == from_prompt.content


# --- faults -------------------------------------------------------------------------------------


async def test_status_fault_for_n_requests(engine: Engine) -> None:
    engine.state.add_fault(Fault(status=503, times=2, path=CHAT_PATH))
    client = engine.async_client()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as failure:
            await client.chat.completions.create(**chat_body("x"))
        assert failure.value.status_code == 503
        assert failure.value.response.headers["retry-after"] == "1"
    answer = await client.chat.completions.create(**chat_body("back"))
    assert answer.choices[0].message.content == "back"
    assert engine.state.faults == []
    assert engine.state.stats.faults_applied == 2


async def test_fault_with_body_and_model_filter(engine: Engine) -> None:
    engine.state.add_fault(Fault(status=400, body={"error": {"message": "bad temp"}}, model="fake-chat"))
    client = engine.async_client()
    with pytest.raises(openai.BadRequestError) as failure:
        await client.chat.completions.create(**chat_body("x"))
    assert failure.value.body == {"message": "bad temp"}
    other = await client.chat.completions.create(
        model="other-model", messages=[{"role": "user", "content": "fine"}]
    )
    assert other.choices[0].message.content == "fine"


async def test_hang_then_client_timeout_counts_abort(engine: Engine) -> None:
    engine.state.add_fault(Fault(hang=True, times=1))
    with pytest.raises(openai.APITimeoutError):
        await engine.async_client(timeout=0.3).chat.completions.create(**chat_body("x"))
    await engine.state.wait_until(lambda s: s.aborted == 1 and s.in_flight == 0, timeout=2)


async def test_latency(engine: Engine) -> None:
    engine.state.add_fault(Fault(latency_s=0.3))
    started = time.monotonic()
    await engine.async_client().embeddings.create(model="fake-embed", input="x")
    assert time.monotonic() - started >= 0.3


async def test_stall_mid_stream(engine: Engine) -> None:
    engine.state.add_fault(Fault(stall_after=2))
    events: list[bytes] = []
    # Reads after the stall would wait for good: give up after 0.5 s without data.
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.5)) as http,
        http.stream(
            "POST", engine.v1 + "/chat/completions", json=chat_body("a b c", stream=True)
        ) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            async for chunk in response.aiter_raw():
                events.append(chunk)
    assert b"".join(events).count(b"data: ") == 2
    await engine.state.wait_until(lambda s: s.aborted == 1, timeout=2)


async def test_break_mid_stream_drops_connection(engine: Engine) -> None:
    stream = await engine.async_client().chat.completions.create(
        **chat_body("one two three four"), stream=True, extra_headers={"x-fake-fault": "break=3"}
    )
    seen = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            seen.append(chunk)
    assert len(seen) == 3
    await engine.state.wait_until(lambda s: s.dropped == 1 and s.in_flight == 0, timeout=2)


async def test_per_request_fault_in_body_and_form(engine: Engine) -> None:
    client = engine.async_client()
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(**chat_body("x"), extra_body={"fake_fault": "status=429"})
    async with httpx.AsyncClient() as http:
        failed = await http.post(
            engine.v1 + "/audio/transcriptions",
            data={"model": "fake-whisper", "fake_fault": "status=502"},
            files={"file": ("a.wav", b"RIFF", "audio/wav")},
        )
        bad_spec = await http.post(
            engine.v1 + "/chat/completions", json=chat_body("x", fake_fault="nonsense")
        )
    assert failed.status_code == 502 and failed.json()["error"]["type"] == "server_error"
    assert bad_spec.status_code == 400 and bad_spec.json()["error"]["param"] == "fake_fault"


async def test_client_disconnect_mid_stream_cancels_within_2s(engine: Engine) -> None:
    body = chat_body("x", stream=True, fake_chunks=50, fake_chunk_delay=1.0)
    async with (
        httpx.AsyncClient() as http,
        http.stream("POST", engine.v1 + "/chat/completions", json=body) as response,
    ):
        async for _ in response.aiter_raw():
            break  # leaves while the engine sleeps before the next chunk
    gone_at = time.monotonic()
    await engine.state.wait_until(lambda s: s.aborted == 1, timeout=2)
    assert time.monotonic() - gone_at < 2
    assert engine.state.stats.in_flight == 0
    assert engine.state.stats.models["fake-chat"].in_flight == 0


# --- observability and control ----------------------------------------------------------------


async def test_in_flight_counters_and_last_request(engine: Engine) -> None:
    engine.state.add_fault(Fault(latency_s=0.3))
    client = engine.async_client()
    await asyncio.gather(
        *[client.chat.completions.create(**chat_body(f"q{i}")) for i in range(3)],
        client.embeddings.create(model="fake-embed", input="x", extra_headers={"x-trace": "t1"}),
    )
    stats = engine.state.stats
    assert stats.max_in_flight == 4 and stats.in_flight == 0
    assert stats.models["fake-chat"].max_in_flight == 3
    assert stats.models["fake-chat"].requests == 3
    assert stats.requests[CHAT_PATH] == 3 and stats.completed == 4
    async with httpx.AsyncClient() as http:
        body = b'{"model": "e", "input": "abc"}'
        headers = {"x-trace": "t2", "content-type": "application/json"}
        await http.post(engine.v1 + "/embeddings", content=body, headers=headers)
        over_http = (await http.get(engine.url + "/_stats")).json()
        reset = (await http.post(engine.url + "/_reset")).json()
    last = over_http["last_request"]
    assert last["headers"]["x-trace"] == "t2" and last["model"] == "e"
    assert last["body_size"] == len(body)
    assert over_http["total_requests"] == 5
    assert reset["total_requests"] == 0 and engine.state.stats.max_in_flight == 0


async def test_control_endpoint(engine: Engine) -> None:
    async with httpx.AsyncClient() as http:
        control = await http.post(
            engine.url + "/_control",
            json={"settings": {"reply": "canned"}, "faults": [{"status": 500, "times": 1}]},
        )
        assert control.json()["faults"][0]["status"] == 500
        failed = await http.post(engine.v1 + "/chat/completions", json=chat_body("x"))
        ok = await http.post(engine.v1 + "/chat/completions", json=chat_body("x"))
        rejected = await http.post(engine.url + "/_control", json={"faults": [{"colour": "red"}]})
        current = (await http.get(engine.url + "/_control")).json()
    assert failed.status_code == 500
    assert ok.json()["choices"][0]["message"]["content"] == "canned"
    assert rejected.status_code == 400
    assert current == {"settings": {**current["settings"], "reply": "canned"}, "faults": []}


async def test_api_key_and_strict_models() -> None:
    state = FakeEngineState(FakeEngineSettings(api_key="secret", strict_models=True, models=["only"]))
    async with serve_app(create_fake_engine(state)) as url:
        wrong = openai.AsyncOpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()
        right = openai.AsyncOpenAI(base_url=url + "/v1", api_key="secret", max_retries=0)
        with pytest.raises(openai.NotFoundError) as failure:
            await right.chat.completions.create(
                model="fake-chat", messages=[{"role": "user", "content": "x"}]
            )
        assert failure.value.code == "model_not_found"
        answer = await right.chat.completions.create(
            model="only", messages=[{"role": "user", "content": "y"}]
        )
        assert answer.choices[0].message.content == "y"


async def test_bad_input_is_400_never_500(engine: Engine) -> None:
    async with httpx.AsyncClient() as http:
        cases = [
            ("/chat/completions", b"{not json"),
            ("/chat/completions", json.dumps({"model": "m"}).encode()),
            ("/chat/completions", json.dumps({"model": "m", "messages": [5]}).encode()),
            ("/completions", json.dumps({"model": "m", "prompt": [{"x": 1}]}).encode()),
            ("/embeddings", json.dumps({"model": "m", "input": 3}).encode()),
            ("/images/generations", json.dumps({"model": "m", "prompt": "p", "size": "big"}).encode()),
            ("/images/generations", json.dumps({"model": "m", "prompt": "p", "n": "many"}).encode()),
            ("/audio/speech", json.dumps({"model": "m", "input": "x", "response_format": "ogg"}).encode()),
            ("/3d/generations", json.dumps({"model": "m", "prompt": "p", "format": "obj"}).encode()),
        ]
        for path, content in cases:
            response = await http.post(
                engine.v1 + path, content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, (path, content, response.text)
            assert "message" in response.json()["error"]


# --- as a process ----------------------------------------------------------------------------


async def test_runs_as_a_process(tmp_path: Path) -> None:
    port = free_port()
    args = ("-m", "inference_club.testing.fake_engine", "--port", str(port), "--models", "m1", "m2")
    process = ProcessHandle.python(*args, log_path=tmp_path / "fake.log")
    try:
        await process.wait_http_async(f"http://127.0.0.1:{port}/v1/models", timeout=15)
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert [m.id for m in (await client.models.list()).data] == ["m1", "m2"]
        async with httpx.AsyncClient() as http:
            await http.post(f"http://127.0.0.1:{port}/_control", json={"add_faults": [{"status": 418}]})
        with pytest.raises(openai.APIStatusError) as failure:
            await client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}])
        assert failure.value.status_code == 418
    finally:
        process.kill()
    assert not process.is_running()
    assert process.returncode == -9


async def test_serve_app_exits_despite_a_hung_request() -> None:
    state = FakeEngineState(faults=[Fault(hang=True)])
    async with serve_app(create_fake_engine(state), shutdown_timeout_s=0.3) as url:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=10)
        hung = asyncio.create_task(client.embeddings.create(model="fake-embed", input="x"))
        await state.wait_until(lambda s: s.in_flight == 1)
        models = await client.models.list()  # faults only apply to inference requests
        assert len(models.data) == len(DEFAULT_MODELS)
        leaving = time.monotonic()
    assert time.monotonic() - leaving < 3
    with pytest.raises(openai.APIError):  # uvicorn answers 500 for the cancelled request
        await hung
