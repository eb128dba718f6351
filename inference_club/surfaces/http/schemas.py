"""OpenAPI descriptions of the inference bodies and answers.

Bodies are forwarded as the client sent them (never round-tripped through models), so
these schemas document the contract without being used to parse requests.
"""

from __future__ import annotations

from typing import Any

from inference_club.domain.endpoints import AnswerKind, BodyKind, Endpoint

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_COMMON = {
    "model": {"type": "string", "description": "A model id from GET /v1/models."},
    "async": {"type": "boolean", "description": "Queue as a job and answer 202 (JSON bodies only)."},
}

_JSON_FIELDS: dict[str, dict[str, Any]] = {
    "chat.completions": {
        "required": ["model", "messages"],
        "properties": {
            "messages": {"type": "array", "items": {"type": "object"}},
            "stream": {"type": "boolean"},
            "max_tokens": {"type": "integer"},
            "temperature": {"type": "number"},
            "tools": {"type": "array", "items": {"type": "object"}},
        },
    },
    "completions": {
        "required": ["model", "prompt"],
        "properties": {"prompt": {"type": "string"}, "stream": {"type": "boolean"}, "max_tokens": {"type": "integer"}},
    },
    "embeddings": {
        "required": ["model", "input"],
        "properties": {"input": {"oneOf": [{"type": "string"}, {"type": "array"}]}, "encoding_format": {"type": "string"}},
    },
    "audio.speech": {
        "required": ["model", "input"],
        "properties": {"input": {"type": "string"}, "voice": {"type": "string"}, "response_format": {"type": "string"},
                       "speed": {"type": "number"}},
    },
    "images.generations": {
        "required": ["model", "prompt"],
        "properties": {"prompt": {"type": "string"}, "n": {"type": "integer"}, "size": {"type": "string"},
                       "response_format": {"type": "string", "enum": ["url", "b64_json"]}},
    },
    "music.generations": {
        "required": ["model", "prompt"],
        "properties": {"prompt": {"type": "string"}, "lyrics": {"type": "string"}, "duration": {"type": "number"},
                       "format": {"type": "string"}, "seed": {"type": "integer"}, "bpm": {"type": "integer"},
                       "key": {"type": "string"}},
    },
    "videos.generations": {
        "required": ["model", "prompt"],
        "properties": {"prompt": {"type": "string"}, "image": {"type": "string"}, "duration": {"type": "number"},
                       "width": {"type": "integer"}, "height": {"type": "integer"}, "fps": {"type": "integer"},
                       "seed": {"type": "integer"}, "negative_prompt": {"type": "string"}},
    },
    "3d.generations": {
        "required": ["model", "prompt"],
        "properties": {"prompt": {"type": "string"}, "format": {"type": "string", "enum": ["glb"]}},
    },
}

_MULTIPART_FIELDS: dict[str, dict[str, Any]] = {
    "audio.transcriptions": {
        "required": ["model", "file"],
        "properties": {"file": {"type": "string", "format": "binary"}, "language": {"type": "string"},
                       "response_format": {"type": "string",
                                           "enum": ["json", "text", "srt", "vtt", "verbose_json"]},
                       "prompt": {"type": "string"}},
    },
    "images.edits": {
        "required": ["model", "image", "prompt"],
        "properties": {"image": {"type": "string", "format": "binary"}, "mask": {"type": "string", "format": "binary"},
                       "prompt": {"type": "string"}, "n": {"type": "integer"}, "size": {"type": "string"},
                       "response_format": {"type": "string", "enum": ["url", "b64_json"]}},
    },
    "voice.generations": {
        "required": ["input"],
        "properties": {"input": {"type": "string", "description": "[S1]/[S2] dialogue script"},
                       "speaker_S1": {"type": "string", "format": "binary"},
                       "speaker_S2": {"type": "string", "format": "binary"},
                       "transcript_S1": {"type": "string"}, "transcript_S2": {"type": "string"},
                       "seed": {"type": "integer"}},
    },
    "3d.generations": {
        "required": ["model", "image"],
        "properties": {"image": {"type": "string", "format": "binary"}, "format": {"type": "string", "enum": ["glb"]}},
    },
}


def _schema(spec: dict[str, Any], *, with_async: bool) -> dict[str, Any]:
    properties = {"model": _COMMON["model"], **spec["properties"]}
    if with_async:
        properties["async"] = _COMMON["async"]
    return {"type": "object", "required": spec["required"], "properties": properties,
            "additionalProperties": True}


def request_body_doc(endpoint: Endpoint) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if endpoint.body in (BodyKind.JSON, BodyKind.JSON_OR_MULTIPART):
        content["application/json"] = {
            "schema": _schema(_JSON_FIELDS[endpoint.name], with_async=endpoint.async_capable)
        }
    if endpoint.body in (BodyKind.MULTIPART, BodyKind.JSON_OR_MULTIPART):
        content["multipart/form-data"] = {"schema": _schema(_MULTIPART_FIELDS[endpoint.name], with_async=False)}
    return {"requestBody": {"required": True, "content": content}}


def response_doc(endpoint: Endpoint) -> dict[int | str, dict[str, Any]]:
    ok: dict[str, Any]
    if endpoint.answer is AnswerKind.MEDIA_BYTES:
        ok = {"description": "Media bytes; `x-file-id` and `x-file-url` name the stored copy.",
              "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    elif endpoint.answer is AnswerKind.STREAM:
        ok = {"description": "JSON, or an SSE stream ending with `data: [DONE]` when `stream` is true.",
              "content": {"application/json": {"schema": {"type": "object"}},
                          "text/event-stream": {"schema": {"type": "string"}}}}
    else:
        ok = {"description": "OpenAI-shaped JSON answer.", "content": {"application/json": {"schema": {"type": "object"}}}}
    errors = {"description": "Error envelope", "content": {"application/json": {"schema": _ERROR}}}
    docs: dict[int | str, dict[str, Any]] = {200: ok}
    for status in (400, 401, 404, 413, 415, 429, 502, 503, 504):
        docs[status] = errors
    if endpoint.async_capable:
        docs[202] = {"description": "Queued as a job (`\"async\": true`).",
                     "content": {"application/json": {"schema": {"type": "object"}}}}
    return docs
