"""Dia (``type = "tts"``, feature ``voice-cloning``): dialogue with cloned voices.

Followed: devnen/Dia-TTS-Server v1.4 (the FastAPI server for nari-labs/Dia):
``POST /upload_reference`` (multipart ``files``) stores a reference clip, ``POST /tts``
with ``{"text", "voice_mode": "clone", "clone_reference_filename", "transcript",
"output_format", "seed"}`` answers the audio; ``GET /api/ui/initial-data`` lists the
server's state (used as the health probe).

``/v1/voice/generations`` maps as follows: the speaker samples ``speaker_S1`` and
``speaker_S2`` (WAV when both are given: Dia takes one audio prompt, so the two are
joined, S1 first) are uploaded as one reference clip, and their transcripts become the
prompt's text (``[S1] transcript_S1 [S2] transcript_S2``), which Dia continues with the
``input`` script. ``seed`` is passed on; the answer is WAV.

The script rules (``[S1]``/``[S2]`` tags, alternating, starting with ``[S1]``) are
checked by the hub before a request reaches the agent (``invalid_script``).

Not supported: voices without a sample (predefined voices: use ``/v1/audio/speech``
with the server's OpenAI-compatible endpoint and the ``openai`` engine instead),
progress, interrupt (the server offers none).
"""

from __future__ import annotations

import io
import uuid
import wave

import httpx

from ..engines import EngineListing
from .base import Adapter, Answer, EngineCall, EngineFailed, EngineRejected, as_int

__all__ = ["DiaAdapter", "join_wavs"]


class DiaAdapter(Adapter):
    name = "dia"
    service_types = ("tts",)
    routes = ("/v1/voice/generations",)

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        return await self.probe(client, "/api/ui/initial-data", timeout=timeout)

    async def run(self, call: EngineCall) -> Answer:
        form = await call.form()
        script = form.fields.get("input")
        if not script:
            raise EngineRejected("'input' is required", param="input")
        samples = [
            (s, form.files.get(f"speaker_{s}"), form.fields.get(f"transcript_{s}")) for s in ("S1", "S2")
        ]
        given = [(s, f, t) for s, f, t in samples if f is not None]
        body: dict[str, object] = {"text": script, "output_format": "wav", "voice_mode": "dialogue"}
        seed = as_int(form.fields.get("seed"), "seed")
        if seed is not None:
            body["seed"] = seed
        if given:
            for speaker, _, transcript in given:
                if not transcript:
                    raise EngineRejected(
                        f"'transcript_{speaker}' is required with speaker_{speaker}",
                        param=f"transcript_{speaker}",
                    )
            clips = [f for _, f, _ in given if f is not None]
            if len(clips) == 1:
                filename, _, audio = clips[0]
                suffix = filename.rsplit(".", 1)[-1] if "." in filename else "wav"
            else:
                audio = join_wavs([clip[2] for clip in clips])
                suffix = "wav"
            name = f"ic-{uuid.uuid4().hex[:16]}.{suffix}"
            call.report(0.0, "uploading the voice samples")
            response = await self.request(
                "POST", "/upload_reference", files={"files": (name, audio, "audio/wav")}
            )
            doc = await self.engine_json(response, "the reference upload")
            errors = doc.get("errors") if isinstance(doc, dict) else None
            if errors:
                raise EngineRejected(f"the Dia server refused the voice samples: {errors}")
            body.update(
                voice_mode="clone",
                clone_reference_filename=name,
                transcript=" ".join(f"[{s}] {t}" for s, _, t in given),
            )
        call.report(0.1, "generating")
        response = await self.request("POST", "/tts", json=body)
        self.raise_for_status(response, "the generation")
        content_type = response.headers.get("content-type", "").split(";")[0]
        if not content_type.startswith("audio/"):
            raise EngineFailed(
                f"the Dia server answered {content_type or 'no content type'} instead of audio"
            )
        return Answer(response.content, content_type)


def join_wavs(clips: list[bytes]) -> bytes:
    """Concatenate WAV clips that share channels, sample width and rate."""
    params = None
    frames: list[bytes] = []
    for index, clip in enumerate(clips):
        try:
            with wave.open(io.BytesIO(clip)) as reader:
                shape = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
                if params is None:
                    params = shape
                elif shape != params:
                    raise EngineRejected(
                        "both speaker samples must be WAV with the same channels, sample width and rate",
                        param=f"speaker_S{index + 1}",
                    )
                frames.append(reader.readframes(reader.getnframes()))
        except (wave.Error, EOFError):
            raise EngineRejected(
                "with two speakers, both samples must be WAV files", param=f"speaker_S{index + 1}"
            ) from None
    assert params is not None
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(params[0])
        writer.setsampwidth(params[1])
        writer.setframerate(params[2])
        for chunk in frames:
            writer.writeframes(chunk)
    return out.getvalue()
