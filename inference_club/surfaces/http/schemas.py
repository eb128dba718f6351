"""OpenAPI descriptions of the inference bodies and answers.

Bodies are forwarded as the client sent them (never round-tripped through models), so
these schemas document the contract without being used to parse requests.
"""

from __future__ import annotations

from typing import Any

from inference_club.domain.endpoints import TEXT, AnswerKind, Endpoint, Fields

_ERROR: dict[str, Any] = {
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

_ERROR_WITH_DETAIL: dict[str, Any] = {
    "type": "object",
    "properties": {"detail": {}, "error": _ERROR["properties"]["error"]},
}

MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by", "service_type", "service_types"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["model"]},
        "created": {"type": "integer"},
        "owned_by": {"type": "string", "description": "The name of the provider serving it."},
        "service_type": {"type": "string", "description": "The first service type it is served as."},
        "service_types": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Every service type it is served as.",
        },
        "input_modalities": {"type": "array", "items": {"type": "string"}},
        "output_modalities": {"type": "array", "items": {"type": "string"}},
        "supported_features": {"type": "array", "items": {"type": "string"}},
        "context_length": {"type": ["integer", "null"]},
    },
}

MODEL_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": MODEL_SCHEMA},
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses (401 also carries ``detail``)."""
    docs: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        schema = _ERROR_WITH_DETAIL if status in (400, 401, 404, 405) else _ERROR
        docs[status] = {"description": "Error", "content": {"application/json": {"schema": schema}}}
    return docs


_COMMON = {
    "model": {**TEXT, "description": "A model id from GET /v1/models."},
    "async": {"type": "boolean", "description": "Queue as a job and answer 202 (JSON bodies only)."},
}


def _schema(fields: Fields, *, with_async: bool) -> dict[str, Any]:
    properties = {"model": _COMMON["model"], **fields.properties}
    if with_async:
        properties["async"] = _COMMON["async"]
    return {
        "type": "object",
        "required": list(fields.required),
        "properties": properties,
        "additionalProperties": True,
    }


def json_body_schema(endpoint: Endpoint) -> dict[str, Any] | None:
    """The JSON body an endpoint takes (``async`` included where it queues), or None."""
    fields = endpoint.json_fields
    return _schema(fields, with_async=endpoint.async_capable) if fields is not None else None


def request_body_doc(endpoint: Endpoint) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if endpoint.json_fields is not None:
        content["application/json"] = {
            "schema": _schema(endpoint.json_fields, with_async=endpoint.async_capable)
        }
    if endpoint.multipart_fields is not None:
        content["multipart/form-data"] = {"schema": _schema(endpoint.multipart_fields, with_async=False)}
    return {"requestBody": {"required": True, "content": content}}


def response_doc(endpoint: Endpoint) -> dict[int | str, dict[str, Any]]:
    ok: dict[str, Any]
    if endpoint.answer is AnswerKind.MEDIA_BYTES:
        ok = {
            "description": "Media bytes; `x-file-id` and `x-file-url` name the stored copy.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    elif endpoint.answer is AnswerKind.STREAM:
        ok = {
            "description": "JSON, or an SSE stream ending with `data: [DONE]` when `stream` is true.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    else:
        ok = {
            "description": "OpenAI-shaped JSON answer.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    errors = {"description": "Error envelope", "content": {"application/json": {"schema": _ERROR}}}
    docs: dict[int | str, dict[str, Any]] = {200: ok}
    for status in (400, 401, 404, 413, 415, 429, 502, 503, 504):
        docs[status] = errors
    if endpoint.async_capable:
        docs[202] = {
            "description": 'Queued as a job (`"async": true`).',
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return docs
