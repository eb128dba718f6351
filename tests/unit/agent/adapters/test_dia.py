"""Dia adapter against the Dia-TTS-Server stub on loopback: dialogue without samples, cloning
from one or two speaker samples, refusals and engine failures; joining WAV samples."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from inference_club.agent.adapters.base import EngineFailed, EngineRejected
from inference_club.agent.adapters.dia import DiaAdapter, join_wavs
from inference_club.testing.fake_media import WAV_SAMPLE_RATE, wav_bytes
from inference_club.testing.stubs.dia import DiaState, create_dia

from .rig import Reports, StubHost, form_call, module_loop

ROUTE = "/v1/voice/generations"
SCRIPT = "[S1] Hello there. [S2] Hi!"


@pytest_asyncio.fixture(loop_scope="module")
async def dia(stub_host: StubHost) -> AsyncIterator[tuple[DiaAdapter, DiaState]]:
    state = DiaState()
    state.control.step_delay_s = 0.0
    async with stub_host.adapter(create_dia(state), engine="dia", type="tts") as adapter:
        assert isinstance(adapter, DiaAdapter)
        yield adapter, state


def frames(data: bytes) -> int:
    with wave.open(io.BytesIO(data)) as reader:
        return int(reader.getnframes())


@module_loop
async def test_without_samples_dia_speaks_the_dialogue(dia: tuple[DiaAdapter, DiaState]) -> None:
    adapter, state = dia
    reports = Reports()
    answer = await adapter.run(form_call(ROUTE, {"input": SCRIPT, "seed": "11"}, report=reports))
    assert state.last_tts == {"text": SCRIPT, "output_format": "wav", "voice_mode": "dialogue", "seed": 11}
    assert answer.content_type == "audio/wav" and answer.body[:4] == b"RIFF"
    assert reports == [(0.1, "generating")]
    assert "/upload_reference" not in state.control.paths()


@module_loop
async def test_one_sample_is_uploaded_and_cloned_with_its_transcript(
    dia: tuple[DiaAdapter, DiaState],
) -> None:
    adapter, state = dia
    sample = wav_bytes(0.2, seed=3)
    reports = Reports()
    await adapter.run(
        form_call(
            ROUTE,
            {"input": SCRIPT, "transcript_S1": "This is me."},
            {"speaker_S1": ("me.wav", sample, "audio/wav")},
            report=reports,
        )
    )
    [(name, uploaded)] = state.references.items()
    assert uploaded == sample and name.startswith("ic-") and name.endswith(".wav")
    assert state.last_tts is not None
    assert state.last_tts["voice_mode"] == "clone" and state.last_tts["clone_reference_filename"] == name
    assert state.last_tts["transcript"] == "[S1] This is me." and "seed" not in state.last_tts
    assert reports.stages() == ["uploading the voice samples", "generating"]


@module_loop
async def test_two_samples_are_joined_into_one_reference(dia: tuple[DiaAdapter, DiaState]) -> None:
    adapter, state = dia
    s1, s2 = wav_bytes(0.2, seed=1), wav_bytes(0.1, seed=2)
    await adapter.run(
        form_call(
            ROUTE,
            {"input": SCRIPT, "transcript_S1": "One.", "transcript_S2": "Two."},
            {"speaker_S1": ("a.wav", s1, "audio/wav"), "speaker_S2": ("b.wav", s2, "audio/wav")},
        )
    )
    [uploaded] = state.references.values()
    assert frames(uploaded) == frames(s1) + frames(s2)
    assert state.last_tts is not None and state.last_tts["transcript"] == "[S1] One. [S2] Two."


@module_loop
async def test_an_mp3_sample_keeps_its_suffix(dia: tuple[DiaAdapter, DiaState]) -> None:
    adapter, state = dia
    await adapter.run(
        form_call(
            ROUTE,
            {"input": SCRIPT, "transcript_S2": "Two."},
            {"speaker_S2": ("voice.mp3", b"ID3 fake mp3", "audio/mpeg")},
        )
    )
    [name] = state.references
    assert name.endswith(".mp3")
    assert state.last_tts is not None and state.last_tts["transcript"] == "[S2] Two."


@module_loop
@pytest.mark.parametrize(
    ("fields", "files", "message", "param"),
    [
        ({"model": "dia"}, {}, "'input' is required", "input"),
        (
            {"input": SCRIPT, "transcript_S1": "One."},
            {"speaker_S2": ("b.wav", b"RIFF", "audio/wav")},
            "'transcript_S2' is required with speaker_S2",
            "transcript_S2",
        ),
        ({"input": SCRIPT, "seed": "x"}, {}, "'seed' must be an integer", "seed"),
    ],
)
async def test_bad_requests_never_reach_the_engine(
    dia: tuple[DiaAdapter, DiaState],
    fields: dict[str, str],
    files: dict[str, tuple[str, bytes, str]],
    message: str,
    param: str,
) -> None:
    adapter, state = dia
    with pytest.raises(EngineRejected, match=message) as info:
        await adapter.run(form_call(ROUTE, fields, files))
    assert info.value.param == param and state.control.calls == []


@module_loop
async def test_engine_refusals_are_client_errors(dia: tuple[DiaAdapter, DiaState]) -> None:
    adapter, _ = dia
    with pytest.raises(EngineRejected, match=r"refused the voice samples: .*Only \.wav and \.mp3 allowed"):
        await adapter.run(
            form_call(
                ROUTE,
                {"input": SCRIPT, "transcript_S1": "One."},
                {"speaker_S1": ("a.ogg", b"OggS", "audio/ogg")},
            )
        )
    with pytest.raises(EngineRejected, match="Text cannot be empty") as info:
        await adapter.run(form_call(ROUTE, {"input": "   "}))
    assert info.value.status == 400


@module_loop
async def test_an_engine_failure_is_an_upstream_error(dia: tuple[DiaAdapter, DiaState]) -> None:
    adapter, state = dia
    state.control.fail = "CUDA error"
    with pytest.raises(
        EngineFailed, match=r"failed the generation \(500\): Speech generation failed: CUDA error"
    ):
        await adapter.run(form_call(ROUTE, {"input": SCRIPT}))


@module_loop
async def test_the_ui_data_route_is_the_health_probe(dia: tuple[DiaAdapter, DiaState]) -> None:
    adapter, state = dia
    listing = await adapter.list_models(adapter.client, timeout=2)
    assert (listing.reachable, listing.models) == (True, ())
    assert state.control.paths() == ["/api/ui/initial-data"]


def test_dia_joins_wav_samples() -> None:
    joined = join_wavs([wav_bytes(0.2), wav_bytes(0.1)])
    with wave.open(io.BytesIO(joined)) as reader:
        assert reader.getnframes() == round(WAV_SAMPLE_RATE * 0.3)
    other = io.BytesIO()
    with wave.open(other, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(WAV_SAMPLE_RATE * 2)
        writer.writeframes(b"\0\0" * 100)
    with pytest.raises(EngineRejected, match="same channels"):
        join_wavs([wav_bytes(0.1), other.getvalue()])
    with pytest.raises(EngineRejected, match="must be WAV"):
        join_wavs([wav_bytes(0.1), b"ID3 mp3"])
