"""Dia voice cloning through hub + agent + a Dia-TTS-Server stub; script rules on the hub."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.testing.fake_media import WAV_SAMPLE_RATE, wav_bytes
from inference_club.testing.stubs.dia import DiaState, create_dia
from tests.integration.adapter_stack import EngineStack, adapter_hub, engine_stack


@pytest.fixture
async def dia(tmp_path: Path) -> AsyncIterator[tuple[EngineStack, DiaState]]:
    state = DiaState()
    state.control.step_delay_s = 0.01
    async with adapter_hub(tmp_path) as hub:
        async with engine_stack(
            hub,
            create_dia(state),
            {
                "type": "tts",
                "engine": "dia",
                "timeout": 3,
                "models": [{"id": "dia-1.6b", "features": ["voice-cloning"]}],
            },
        ) as stack:
            yield stack, state


async def test_two_speakers_are_cloned_from_their_samples(dia: tuple[EngineStack, DiaState]) -> None:
    stack, state = dia
    s1, s2 = wav_bytes(0.3, seed=1), wav_bytes(0.2, seed=2)
    async with stack.http() as http:
        answer = await http.post(
            "/v1/voice/generations",
            data={
                "model": "dia-1.6b",
                "input": "[S1] Shall we go? [S2] Yes, now. (laughs)",
                "seed": "5",
                "transcript_S1": "I am the first voice.",
                "transcript_S2": "And I am the second.",
            },
            files={"speaker_S1": ("s1.wav", s1, "audio/wav"), "speaker_S2": ("s2.wav", s2, "audio/wav")},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "audio/wav"
        assert (await http.get(answer.headers["x-file-url"])).headers["content-type"] == "audio/wav"
    body = state.last_tts
    assert body is not None
    assert body["voice_mode"] == "clone" and body["seed"] == 5 and body["output_format"] == "wav"
    assert body["transcript"] == "[S1] I am the first voice. [S2] And I am the second."
    assert body["text"] == "[S1] Shall we go? [S2] Yes, now. (laughs)"
    reference = state.references[body["clone_reference_filename"]]
    with wave.open(io.BytesIO(reference)) as joined:
        assert joined.getnframes() == round(WAV_SAMPLE_RATE * 0.5)  # both samples, S1 first


async def test_bad_scripts_are_refused_on_the_hub(dia: tuple[EngineStack, DiaState]) -> None:
    stack, state = dia
    async with stack.http() as http:
        for script, fragment in (
            ("Hello there", "start with a speaker tag"),
            ("[S2] Hi [S1] Hello", "must start with '[S1]'"),
            ("[S1] Hi [S3] Hello", "[S3]"),
            ("[S1] Hi [S1] Hello", "twice in a row"),
            ("[S1] Hi [S2]", "has no text"),
        ):
            answer = await http.post("/v1/voice/generations", data={"model": "dia-1.6b", "input": script})
            assert answer.status_code == 400, script
            error = answer.json()["error"]
            assert (
                error["type"] == "invalid_script"
                and error["param"] == "input"
                and fragment in error["message"]
            )
    assert "/tts" not in state.control.paths()  # no engine was bothered


async def test_mismatched_samples_and_engine_failures(dia: tuple[EngineStack, DiaState]) -> None:
    stack, state = dia
    async with stack.http() as http:
        mixed = await http.post(
            "/v1/voice/generations",
            data={"model": "dia-1.6b", "input": "[S1] a [S2] b", "transcript_S1": "x", "transcript_S2": "y"},
            files={
                "speaker_S1": ("s1.wav", wav_bytes(0.1), "audio/wav"),
                "speaker_S2": ("s2.mp3", b"ID3 not a wav", "audio/mpeg"),
            },
        )
        assert mixed.status_code == 400 and mixed.json()["error"]["param"] == "speaker_S2"
        state.control.fail = "CUDA error"
        failed = await http.post("/v1/voice/generations", data={"model": "dia-1.6b", "input": "[S1] hello"})
        assert failed.status_code == 502 and "CUDA error" in failed.json()["error"]["message"]
