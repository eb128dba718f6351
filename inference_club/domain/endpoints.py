"""The inference endpoints of SPEC §3 as data: path, service type, body and answer kinds.

Routes, executors, the job queue and the docs all read this one table, so an endpoint
is described once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ServiceType(StrEnum):
    LLM = "llm"
    EMBEDDING = "embedding"
    STT = "stt"
    TTS = "tts"
    IMAGE = "image"
    MUSIC = "music"
    VIDEO = "video"
    MESH = "mesh"


class BodyKind(StrEnum):
    JSON = "json"
    MULTIPART = "multipart"
    JSON_OR_MULTIPART = "json_or_multipart"


class AnswerKind(StrEnum):
    """How the hub treats what the provider answers."""

    JSON = "json"  # relayed as is (chat without stream, embeddings)
    STREAM = "stream"  # SSE when the body asks ``stream: true``, else JSON
    TEXT_OR_JSON = "text_or_json"  # transcriptions: json, text, srt, vtt, verbose_json
    MEDIA_BYTES = "media_bytes"  # audio / video bytes, stored as a file
    IMAGES = "images"  # OpenAI images JSON; b64 images stored as files
    MESH = "mesh"  # GLB bytes or {"data":[{"b64_json"}]}, stored as files


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    path: str
    service_type: ServiceType
    body: BodyKind
    answer: AnswerKind
    async_capable: bool
    required_feature: str | None = None
    summary: str = ""

    @property
    def upstream_path(self) -> str:
        """Path the agent forwards to, relative to the service URL (which ends in /v1)."""
        return self.path


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("chat.completions", "/v1/chat/completions", ServiceType.LLM, BodyKind.JSON,
             AnswerKind.STREAM, True, summary="Chat completion (SSE with stream: true)."),
    Endpoint("completions", "/v1/completions", ServiceType.LLM, BodyKind.JSON,
             AnswerKind.STREAM, True, summary="Legacy text completion."),
    Endpoint("embeddings", "/v1/embeddings", ServiceType.EMBEDDING, BodyKind.JSON,
             AnswerKind.JSON, True, summary="Embeddings."),
    Endpoint("audio.transcriptions", "/v1/audio/transcriptions", ServiceType.STT,
             BodyKind.MULTIPART, AnswerKind.TEXT_OR_JSON, False, summary="Speech to text."),
    Endpoint("audio.speech", "/v1/audio/speech", ServiceType.TTS, BodyKind.JSON,
             AnswerKind.MEDIA_BYTES, True, summary="Text to speech; answers audio bytes."),
    Endpoint("images.generations", "/v1/images/generations", ServiceType.IMAGE, BodyKind.JSON,
             AnswerKind.IMAGES, True, summary="Image generation."),
    Endpoint("images.edits", "/v1/images/edits", ServiceType.IMAGE, BodyKind.MULTIPART,
             AnswerKind.IMAGES, False, summary="Image edit (image or image[], optional mask)."),
    Endpoint("music.generations", "/v1/music/generations", ServiceType.MUSIC, BodyKind.JSON,
             AnswerKind.MEDIA_BYTES, True, summary="Music generation; answers audio bytes."),
    Endpoint("videos.generations", "/v1/videos/generations", ServiceType.VIDEO, BodyKind.JSON,
             AnswerKind.MEDIA_BYTES, True, summary="Video generation; answers video/mp4 bytes."),
    Endpoint("voice.generations", "/v1/voice/generations", ServiceType.TTS, BodyKind.MULTIPART,
             AnswerKind.MEDIA_BYTES, False, required_feature="voice-cloning",
             summary="Dialogue synthesis with cloned voices."),
    Endpoint("3d.generations", "/v1/3d/generations", ServiceType.MESH,
             BodyKind.JSON_OR_MULTIPART, AnswerKind.MESH, True,
             summary="3D mesh (GLB) from a prompt (JSON) or an image (multipart)."),
)

BY_PATH: dict[str, Endpoint] = {e.path: e for e in ENDPOINTS}
BY_NAME: dict[str, Endpoint] = {e.name: e for e in ENDPOINTS}
