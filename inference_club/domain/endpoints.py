"""The inference endpoints (docs/api.md) as data: path, service type, body and answer kinds,
the checks a body must pass, the uploads it accepts and the fields its schema documents.

Routes, executors, the job queue, validation and the OpenAPI document all read this one
table, so an endpoint is described once, in its row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inference_club.domain import validation as checks
from inference_club.domain.service_types import ServiceType as ServiceType  # its long-standing home
from inference_club.errors import NoProvider


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
class Fields:
    """A body's documented fields (JSON Schema fragments); ``model`` and ``async`` are added by the docs."""

    required: tuple[str, ...]
    properties: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Uploads:
    """The files a multipart body must carry and the content types its files may have."""

    required: tuple[tuple[str, ...], ...] = ()
    """Each entry lists alternative field names; one of them must be a file."""
    accepted: tuple[str, ...] = ()
    """Content-type prefixes; empty: any type."""


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
    check: Callable[[Mapping[str, Any]], None] = field(default=lambda _data: None, compare=False, repr=False)
    """The endpoint's own field checks, after ``model``, ``stream`` and ``async``."""
    json_fields: Fields | None = field(default=None, compare=False, repr=False)
    multipart_fields: Fields | None = field(default=None, compare=False, repr=False)
    uploads: Uploads = field(default=Uploads(), compare=False, repr=False)
    model_optional: bool = False
    """The client may leave ``model`` out: the hub picks one that has ``required_feature``."""

    @property
    def upstream_path(self) -> str:
        """Path the agent forwards to, relative to the service URL (which ends in /v1)."""
        return self.path

    def validate(
        self, data: Mapping[str, Any], *, default_model: Callable[[], str | None] | None = None
    ) -> str:
        """Check a body before anything is routed or queued; returns the model it names (or the hub picks)."""
        if data.get("model") is None and self.model_optional and default_model is not None:
            self.check(data)
            chosen = default_model()
            if chosen is None:
                raise NoProvider("No online provider offers this endpoint to this user.", param="model")
            return chosen
        model = checks.check_common(data)
        self.check(data)
        return model


# A string the hub requires: at least one non-blank character.
TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": "\\S"}
_BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
_IMAGE_FORMAT: dict[str, Any] = {"type": "string", "enum": ["url", "b64_json"]}
_TRANSCRIPT_FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "chat.completions",
        "/v1/chat/completions",
        ServiceType.LLM,
        BodyKind.JSON,
        AnswerKind.STREAM,
        True,
        summary="Chat completion (SSE with stream: true).",
        check=checks.check_chat,
        json_fields=Fields(
            ("model", "messages"),
            {
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["role"],
                        "properties": {"role": {"type": "string"}},
                    },
                },
                "stream": {"type": "boolean"},
                "max_tokens": {"type": "integer"},
                "temperature": {"type": "number"},
                "tools": {"type": "array", "items": {"type": "object"}},
            },
        ),
    ),
    Endpoint(
        "completions",
        "/v1/completions",
        ServiceType.LLM,
        BodyKind.JSON,
        AnswerKind.STREAM,
        True,
        summary="Legacy text completion.",
        check=checks.check_completions,
        json_fields=Fields(
            ("model", "prompt"),
            {
                "prompt": {"oneOf": [{"type": "string"}, {"type": "array"}]},
                "stream": {"type": "boolean"},
                "max_tokens": {"type": "integer"},
            },
        ),
    ),
    Endpoint(
        "responses",
        "/v1/responses",
        ServiceType.LLM,
        BodyKind.JSON,
        AnswerKind.STREAM,
        True,
        summary="Responses API (SSE events with stream: true).",
        check=checks.check_responses,
        json_fields=Fields(
            ("model", "input"),
            {
                "input": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1}]},
                "instructions": {"type": "string"},
                "stream": {"type": "boolean"},
                "max_output_tokens": {"type": "integer"},
            },
        ),
    ),
    Endpoint(
        "embeddings",
        "/v1/embeddings",
        ServiceType.EMBEDDING,
        BodyKind.JSON,
        AnswerKind.JSON,
        True,
        summary="Embeddings.",
        check=checks.check_embeddings,
        json_fields=Fields(
            ("model", "input"),
            {
                "input": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1}]},
                "encoding_format": {"type": "string"},
            },
        ),
    ),
    Endpoint(
        "audio.transcriptions",
        "/v1/audio/transcriptions",
        ServiceType.STT,
        BodyKind.MULTIPART,
        AnswerKind.TEXT_OR_JSON,
        False,
        summary="Speech to text.",
        check=checks.check_transcription,
        multipart_fields=Fields(
            ("model", "file"),
            {
                "file": _BINARY,
                "language": {"type": "string"},
                "response_format": {"type": "string", "enum": _TRANSCRIPT_FORMATS},
                "prompt": {"type": "string"},
            },
        ),
        uploads=Uploads(required=(("file",),), accepted=("audio/", "video/", "application/octet-stream")),
    ),
    Endpoint(
        "audio.speech",
        "/v1/audio/speech",
        ServiceType.TTS,
        BodyKind.JSON,
        AnswerKind.MEDIA_BYTES,
        True,
        summary="Text to speech; answers audio bytes.",
        check=checks.check_speech,
        json_fields=Fields(
            ("model", "input"),
            {
                "input": TEXT,
                "voice": {"oneOf": [{"type": "string"}, {"type": "object"}]},
                "response_format": {"type": "string"},
                "speed": {"type": "number"},
            },
        ),
    ),
    Endpoint(
        "images.generations",
        "/v1/images/generations",
        ServiceType.IMAGE,
        BodyKind.JSON,
        AnswerKind.IMAGES,
        True,
        summary="Image generation.",
        check=checks.check_prompt,
        json_fields=Fields(
            ("model", "prompt"),
            {
                "prompt": TEXT,
                "n": {"type": "integer"},
                "size": {"type": "string"},
                "response_format": _IMAGE_FORMAT,
            },
        ),
    ),
    Endpoint(
        "images.edits",
        "/v1/images/edits",
        ServiceType.IMAGE,
        BodyKind.MULTIPART,
        AnswerKind.IMAGES,
        False,
        summary="Image edit (image or image[], optional mask).",
        check=checks.check_image_edit,
        multipart_fields=Fields(
            ("model", "image", "prompt"),
            {
                "image": _BINARY,
                "mask": _BINARY,
                "prompt": TEXT,
                "n": {"type": "integer"},
                "size": {"type": "string"},
                "response_format": _IMAGE_FORMAT,
            },
        ),
        uploads=Uploads(required=(("image", "image[]"),), accepted=("image/", "application/octet-stream")),
    ),
    Endpoint(
        "music.generations",
        "/v1/music/generations",
        ServiceType.MUSIC,
        BodyKind.JSON,
        AnswerKind.MEDIA_BYTES,
        True,
        summary="Music generation; answers audio bytes.",
        check=checks.check_prompt,
        json_fields=Fields(
            ("model", "prompt"),
            {
                "prompt": TEXT,
                "lyrics": {"type": "string"},
                "duration": {"type": "number"},
                "format": {"type": "string"},
                "seed": {"type": "integer"},
                "bpm": {"type": "integer"},
                "key": {"type": "string"},
            },
        ),
    ),
    Endpoint(
        "videos.generations",
        "/v1/videos/generations",
        ServiceType.VIDEO,
        BodyKind.JSON,
        AnswerKind.MEDIA_BYTES,
        True,
        summary="Video generation; answers video/mp4 bytes.",
        check=checks.check_video,
        json_fields=Fields(
            ("model", "prompt"),
            {
                "prompt": TEXT,
                "image": {"type": "string"},
                "duration": {"type": "number"},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
                "fps": {"type": "integer"},
                "seed": {"type": "integer"},
                "negative_prompt": {"type": "string"},
            },
        ),
    ),
    Endpoint(
        "voice.generations",
        "/v1/voice/generations",
        ServiceType.TTS,
        BodyKind.MULTIPART,
        AnswerKind.MEDIA_BYTES,
        False,
        required_feature="voice-cloning",
        summary="Dialogue synthesis with cloned voices.",
        check=checks.check_voice,
        multipart_fields=Fields(
            ("input",),
            {
                "input": {**TEXT, "description": "[S1]/[S2] dialogue script"},
                "speaker_S1": _BINARY,
                "speaker_S2": _BINARY,
                "transcript_S1": {"type": "string"},
                "transcript_S2": {"type": "string"},
                "seed": {"type": "integer"},
            },
        ),
        uploads=Uploads(accepted=("audio/", "application/octet-stream")),
        model_optional=True,
    ),
    Endpoint(
        "3d.generations",
        "/v1/3d/generations",
        ServiceType.MESH,
        BodyKind.JSON_OR_MULTIPART,
        AnswerKind.MESH,
        True,
        summary="3D mesh (GLB) from a prompt (JSON) or an image (multipart).",
        check=checks.check_mesh,
        json_fields=Fields(
            ("model", "prompt"),
            {
                "prompt": {"type": "string"},
                "format": {"type": "string", "enum": ["glb"]},
            },
        ),
        multipart_fields=Fields(
            ("model", "image"),
            {
                "image": _BINARY,
                "format": {"type": "string", "enum": ["glb"]},
            },
        ),
        uploads=Uploads(accepted=("image/", "application/octet-stream")),
    ),
)

BY_PATH: dict[str, Endpoint] = {e.path: e for e in ENDPOINTS}
BY_NAME: dict[str, Endpoint] = {e.name: e for e in ENDPOINTS}
