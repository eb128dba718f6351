"""whisper.cpp adapter against the whisper.cpp stub on loopback: the form it sends, each
``response_format`` answered the OpenAI way, refusals and engine failures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from inference_club.agent.adapters.base import EngineFailed, EngineRejected
from inference_club.agent.adapters.whispercpp import WhisperCppAdapter, verbose_to_openai
from inference_club.testing.fake_media import wav_bytes
from inference_club.testing.stubs.whispercpp import WhisperState, create_whispercpp, transcript_for

from .rig import Reports, StubHost, form_call, module_loop

ROUTE = "/v1/audio/transcriptions"
AUDIO = wav_bytes(0.1)
TRANSCRIPT = transcript_for(len(AUDIO))


@pytest_asyncio.fixture(loop_scope="module")
async def whisper(stub_host: StubHost) -> AsyncIterator[tuple[WhisperCppAdapter, WhisperState]]:
    state = WhisperState()
    async with stub_host.adapter(create_whispercpp(state), engine="whispercpp", type="stt") as adapter:
        assert isinstance(adapter, WhisperCppAdapter)
        yield adapter, state


@module_loop
async def test_json_sends_verbose_json_and_the_passed_fields(
    whisper: tuple[WhisperCppAdapter, WhisperState],
) -> None:
    adapter, state = whisper
    reports = Reports()
    call = form_call(
        ROUTE,
        {"model": "w", "language": "en", "prompt": "names: Ada", "temperature": "0.2", "seed": "9"},
        {"file": ("a.wav", AUDIO, "audio/wav")},
        report=reports,
    )
    answer = await adapter.run(call)
    assert orjson.loads(answer.body) == {"text": TRANSCRIPT} and answer.content_type == "application/json"
    assert state.control.bodies[-1] == {
        "response_format": "verbose_json",
        "language": "en",
        "prompt": "names: Ada",
        "temperature": "0.2",
    }
    assert reports == [(0.0, "transcribing")]


@module_loop
@pytest.mark.parametrize(
    ("fmt", "content_type", "start"),
    [
        ("text", "text/plain; charset=utf-8", TRANSCRIPT),
        ("srt", "text/plain; charset=utf-8", "1\n00:00:00,000 --> 00:00:02,000"),
        ("vtt", "text/vtt; charset=utf-8", "WEBVTT"),
    ],
)
async def test_text_formats_pass_the_engine_text_through(
    whisper: tuple[WhisperCppAdapter, WhisperState], fmt: str, content_type: str, start: str
) -> None:
    adapter, state = whisper
    answer = await adapter.run(
        form_call(ROUTE, {"response_format": fmt}, {"file": ("a.wav", AUDIO, "audio/wav")})
    )
    assert answer.content_type == content_type and answer.body.decode().startswith(start)
    assert state.control.bodies[-1] == {"response_format": fmt}


@module_loop
async def test_verbose_json_has_words_only_when_asked(
    whisper: tuple[WhisperCppAdapter, WhisperState],
) -> None:
    adapter, _ = whisper
    file = {"file": ("a.wav", AUDIO, "audio/wav")}
    plain = orjson.loads(
        (await adapter.run(form_call(ROUTE, {"response_format": "verbose_json"}, file))).body
    )
    assert plain["text"] == TRANSCRIPT and plain["language"] == "english" and "words" not in plain
    assert plain["segments"][0]["text"] == " " + TRANSCRIPT
    with_words = orjson.loads(
        (
            await adapter.run(
                form_call(
                    ROUTE, {"response_format": "verbose_json", "timestamp_granularities[]": "word"}, file
                )
            )
        ).body
    )
    assert [w["word"] for w in with_words["words"]] == TRANSCRIPT.split()


@module_loop
async def test_bad_requests_never_reach_the_engine(whisper: tuple[WhisperCppAdapter, WhisperState]) -> None:
    adapter, state = whisper
    with pytest.raises(EngineRejected, match="'file' is required") as info:
        await adapter.run(form_call(ROUTE, {"model": "w"}))
    assert info.value.param == "file"
    with pytest.raises(EngineRejected, match="'response_format' must be one of json, text"):
        await adapter.run(
            form_call(ROUTE, {"response_format": "xml"}, {"file": ("a.wav", AUDIO, "audio/wav")})
        )
    assert state.control.calls == []


@module_loop
@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_an_engine_failure_is_an_upstream_error(
    whisper: tuple[WhisperCppAdapter, WhisperState], fmt: str
) -> None:
    adapter, state = whisper
    state.control.fail = "failed to decode audio"
    with pytest.raises(EngineFailed, match=r"failed the transcription \(500\): failed to decode audio"):
        await adapter.run(form_call(ROUTE, {"response_format": fmt}, {"file": ("a.wav", AUDIO, "audio/wav")}))


@module_loop
async def test_health_is_the_listing(whisper: tuple[WhisperCppAdapter, WhisperState]) -> None:
    adapter, state = whisper
    listing = await adapter.list_models(adapter.client, timeout=2)
    assert (listing.reachable, listing.models) == (True, ())
    assert state.control.paths() == ["/health"]


def test_whispercpp_verbose_json_becomes_openai_verbose_json() -> None:
    doc = {
        "task": "transcribe",
        "language": "english",
        "duration": 3.5,
        "text": " hi there",
        "segments": [
            {
                "id": 0,
                "text": " hi there",
                "start": 0.0,
                "end": 1.5,
                "tokens": [1, 2],
                "words": [
                    {"word": " hi", "start": 0.0, "end": 0.5},
                    {"word": " there", "start": 0.5, "end": 1.5},
                ],
                "temperature": 0.0,
                "avg_logprob": -0.1,
                "no_speech_prob": 0.02,
            }
        ],
    }
    out = verbose_to_openai(doc, words=True)
    assert out["text"] == "hi there" and out["duration"] == 3.5
    assert out["segments"][0]["seek"] == 0 and out["segments"][0]["compression_ratio"] == 0.0
    assert out["words"] == [
        {"word": "hi", "start": 0.0, "end": 0.5},
        {"word": "there", "start": 0.5, "end": 1.5},
    ]
    assert "words" not in verbose_to_openai(doc, words=False)


def test_verbose_json_fills_what_the_engine_left_out() -> None:
    doc = {
        "detected_language": "german",
        "segments": ["junk", {"text": " a", "end": 4.25, "tokens": [3, "x", 4], "words": [{"start": 1}]}],
    }
    out = verbose_to_openai(doc, words=True)
    assert (out["task"], out["language"], out["text"]) == ("transcribe", "german", "")
    assert out["duration"] == 4.25  # the last segment's end
    assert [(s["id"], s["tokens"]) for s in out["segments"]] == [(1, [3, 4])]
    assert out["words"] == []  # a word without its text is dropped
    assert verbose_to_openai({}, words=False)["duration"] == 0.0
