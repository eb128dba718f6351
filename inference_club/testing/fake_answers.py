"""What the fake engine answers with: usage, embeddings, audio, transcriptions, prompts read
from a request. Pure functions of the request, so the same request gets the same answer."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from typing import Any

from starlette.datastructures import FormData

from inference_club.testing import fake_media
from inference_club.testing.fake_wire import ApiError, Reply, fingerprint

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


def is_image(value: Any) -> bool:
    """A first frame as the video endpoint takes it: a data URI or bare base64 of PNG/JPEG."""
    if not isinstance(value, str):
        raise ApiError(400, "'image' must be a data URI or base64 string", "image")
    try:
        data = base64.b64decode(
            value.partition(",")[2] if value.startswith("data:") else value, validate=True
        )
    except (ValueError, TypeError):
        raise ApiError(400, "'image' is not valid base64", "image") from None
    return data.startswith((b"\x89PNG", b"\xff\xd8"))


def prompt_of(body: dict[str, Any] | FormData) -> str | None:
    """What a request asks for, as counted in ``stats.prompts``."""
    messages = body.get("messages")
    if isinstance(messages, list):
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        return message_text(users[-1]) if users else None
    for name in ("prompt", "input"):
        value = body.get(name)
        if isinstance(value, str):
            return value
    return None


def message_text(message: Any) -> str:
    if not isinstance(message, dict):
        raise ApiError(400, "each message must be an object", "messages")
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def token_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def embedding(text: str, size: int) -> list[float]:
    """A unit vector derived from the text's hash: equal texts, equal vectors."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range((size + 7) // 8))
    values = [int.from_bytes(raw[4 * i : 4 * i + 4], "big") / 2**31 - 1.0 for i in range(size)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    # Rounded through float32 so float and base64 encodings carry the same numbers.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


def image_size(size: str, default: tuple[int, int]) -> tuple[int, int]:
    if not size or size == "auto":
        return default
    match = re.fullmatch(r"(\d+)x(\d+)", size)
    if not match or not all(1 <= int(side) <= 4096 for side in match.groups()):
        raise ApiError(400, "'size' must look like 1024x1024 (sides up to 4096)", "size")
    return int(match[1]), int(match[2])


def audio_reply(audio_format: str, duration: float, seed: int, size: int | None) -> Reply:
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


def timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02}:{minutes:02}:{rest // 1000:02}{separator}{rest % 1000:03}"


def transcription(
    name: str, data: bytes, response_format: str, language: str, granularities: list[str]
) -> Reply:
    text = f"transcript of {name}: {len(data)} bytes, sha256 {fingerprint(data)}"
    duration = fake_media.wav_duration(data) or len(data) / 32_000
    if response_format == "json":
        return Reply.json({"text": text})
    if response_format == "text":
        return Reply.text(text + "\n")
    if response_format == "srt":
        return Reply.text(f"1\n{timestamp(0, ',')} --> {timestamp(duration, ',')}\n{text}\n\n")
    if response_format == "vtt":
        cue = f"{timestamp(0, '.')} --> {timestamp(duration, '.')}\n{text}\n\n"
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
