"""The OpenAPI document describes what the hub validates and answers.

FastAPI derives most of it from the routes; this module completes it in one place so that
generated clients and schema-driven fuzzers see the real contract:

- every error status a route can answer, with the body it carries (OpenAI's envelope;
  ``detail`` beside it for 400/401/404/405), instead of FastAPI's unused 422;
- the 202 job envelope of ``"async": true`` and the job, batch and file objects;
- the ``Authorization: Bearer`` requirement of every ``/v1`` and agent route.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from inference_club.domain.endpoints import ENDPOINTS, ServiceType
from inference_club.surfaces.http.schemas import json_body_schema

__all__ = ["complete", "install"]

_REF = "#/components/schemas/"

_ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["message", "type"],
    "properties": {
        "message": {"type": "string"},
        "type": {
            "type": "string",
            "description": "Stable error type, e.g. `invalid_request`, `no_provider`.",
        },
        "param": {"type": ["string", "null"]},
        "code": {"type": ["string", "null"]},
    },
}

_TS = {"type": ["integer", "null"]}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": _ERROR_BODY},
        "description": "OpenAI's error envelope.",
    },
    "ErrorWithDetail": {
        "type": "object",
        "required": ["error"],
        "properties": {"detail": {}, "error": _ERROR_BODY},
        "description": "The envelope; authentication, malformed-JSON, unknown-path and wrong-method "
        "answers also carry `detail`.",
    },
    "JobEnvelope": {
        "type": "object",
        "required": ["id", "object", "status", "inference_type", "endpoint", "model", "created", "queued_at"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["inference.job"]},
            "status": {"type": "string", "enum": ["QUEUED", "PROCESSING", "PROCESSED", "FAILED", "CANCELED"]},
            "inference_type": {"type": "string"},
            "endpoint": {"type": "string"},
            "model": {"type": "string"},
            "created": {"type": "integer"},
            "queued_at": _TS,
        },
        "description": 'The answer to `"async": true`: the queued job.',
    },
    "Job": {
        "allOf": [{"$ref": _REF + "JobEnvelope"}],
        "type": "object",
        "properties": {
            "attempts": {"type": "integer"},
            "max_attempts": {"type": "integer"},
            "provider": {"type": ["string", "null"]},
            "started_at": _TS,
            "finished_at": _TS,
            "result": {},
            "result_url": {"type": ["string", "null"]},
            "files": {"type": "array", "items": {"type": "object"}},
            "error": {"type": ["object", "null"]},
        },
    },
    "Batch": {
        "type": "object",
        "required": ["id", "status", "total"],
        "properties": {
            "id": {"type": "string"},
            "label": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": ["PENDING", "PROCESSING", "DONE"]},
            "total": {"type": "integer"},
            "queued": {"type": "integer"},
            "processing": {"type": "integer"},
            "processed": {"type": "integer"},
            "failed": {"type": "integer"},
            "canceled": {"type": "integer"},
            "created": {"type": "integer"},
        },
    },
    "File": {
        "type": "object",
        "required": ["id", "object", "bytes", "created_at", "filename", "purpose"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["file"]},
            "bytes": {"type": "integer"},
            "created_at": {"type": "integer"},
            "filename": {"type": "string"},
            "purpose": {"type": "string"},
            "content_type": {"type": "string"},
            "url": {"type": "string"},
        },
    },
}


def _list_of(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"$ref": _REF + name}},
            "has_more": {"type": "boolean"},
            "first_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "last_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
    }


#: Success bodies of routes whose handlers return plain dicts: (method, path) → (status, schema).
_SUCCESS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("get", "/v1/jobs"): ("200", _list_of("Job")),
    ("get", "/v1/jobs/{job_id}"): ("200", {"$ref": _REF + "Job"}),
    ("post", "/v1/jobs/{job_id}/cancel"): ("200", {"$ref": _REF + "Job"}),
    ("post", "/v1/jobs/{job_id}/retry"): ("202", {"$ref": _REF + "Job"}),
    ("post", "/v1/batches"): ("202", {"$ref": _REF + "Batch"}),
    ("get", "/v1/batches"): ("200", _list_of("Batch")),
    ("get", "/v1/batches/{batch_id}"): ("200", {"$ref": _REF + "Batch"}),
    ("post", "/v1/batches/{batch_id}/cancel"): ("200", {"$ref": _REF + "Batch"}),
    ("post", "/v1/files"): ("200", {"$ref": _REF + "File"}),
    ("get", "/v1/files"): ("200", _list_of("File")),
    ("get", "/v1/files/{file_id}"): ("200", {"$ref": _REF + "File"}),
}

_DETAIL_STATUSES = frozenset({"400", "401", "404", "405"})
_DESCRIPTIONS = {
    "400": "Invalid request (`invalid_request`, names `param`); a body that is not JSON also carries `detail`.",
    "401": "Missing or invalid API key (`invalid_api_key`).",
    "404": "Unknown object (`not_found`), or no provider for the model (`no_provider`).",
    "409": "Not valid in the object's state (`conflict`).",
    "413": "Body or upload over its limit (`request_too_large`).",
    "415": "A body of a type the route cannot take (`unsupported_media_type`).",
    "429": "Over the key's rate limit (`rate_limited`).",
}


def _error(status: str) -> dict[str, Any]:
    name = "ErrorWithDetail" if status in _DETAIL_STATUSES else "Error"
    return {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": _REF + name}}},
    }


def _authenticated(path: str) -> bool:
    return path.startswith(("/v1/", "/api/inference/agent/"))


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers, job envelope and shared schemas to a FastAPI document."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(copy.deepcopy(SCHEMAS))
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            _complete_operation(path, method, operation)
    return document


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    responses.pop("422", None)  # validation failures answer 400 invalid_request
    wanted: set[str] = set()
    if operation.get("parameters") or operation.get("requestBody"):
        wanted.add("400")
    if operation.get("requestBody"):
        wanted.add("413")
    if _authenticated(path):
        wanted.add("401")
        operation.setdefault("security", [{"HTTPBearer": []}])
    if "{" in path:
        wanted.add("404")
    if path.startswith("/v1/admin/"):
        wanted.add("404")  # not an admin: the admin routes do not exist for you
    if path.endswith(("/cancel", "/retry")):
        wanted.add("409")
    if operation.get("tags") == ["inference"] or (method, path) == ("post", "/v1/batches"):
        wanted.add("404")  # no_provider
    for status in sorted(wanted):
        responses.setdefault(status, _error(status))
    for status, response in responses.items():
        if status[0] in "45" and isinstance(response, dict):
            response["content"] = _error(status)["content"]
    if "202" in responses and operation.get("tags") == ["inference"]:
        responses["202"]["content"] = {"application/json": {"schema": {"$ref": _REF + "JobEnvelope"}}}
    _describe_inputs(path, method, operation)
    success = _SUCCESS.get((method, path))
    if success is not None:
        status, schema = success
        responses.pop("200" if status == "202" else "202", None)
        entry = responses.setdefault(status, {"description": "Success"})
        entry["content"] = {"application/json": {"schema": schema}}


_STATUSES = "QUEUED|PROCESSING|PROCESSED|FAILED|CANCELED"
_RUN_STATUSES = "RUNNING|AWAITING|DONE|FAILED|CANCELED"

_HEARTBEAT_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 150, "pattern": "^[A-Za-z0-9_.:@-]+$"},
        "transport": {"type": "string", "enum": ["direct", "tunnel"], "default": "direct"},
        "callback_url": {
            "type": "string",
            "maxLength": 2048,
            "description": "Required with the direct transport; must resolve outside blocked networks.",
        },
        "version": {"type": "string", "maxLength": 64},
        "services": {
            "type": "array",
            "maxItems": 64,
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": [t.value for t in ServiceType]},
                    "engine": {"type": "string", "maxLength": 64},
                    "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 10000},
                    "models": {"type": "array", "items": {"type": "object", "required": ["id"]}},
                },
            },
        },
        "models": {"type": "array", "description": "Legacy form: [{name, context_window}] (llm)."},
        "health": {"type": "object"},
        "visibility": {"type": "string", "enum": ["private", "shared"]},
    },
}


def _batch_body() -> dict[str, Any]:
    items = []
    for endpoint in ENDPOINTS:
        body = json_body_schema(endpoint)
        if body is None or not endpoint.async_capable:
            continue
        body = {**body, "properties": {k: v for k, v in body["properties"].items() if k != "async"}}
        items.append(
            {
                "type": "object",
                "required": ["endpoint", "body"],
                "properties": {"endpoint": {"type": "string", "enum": [endpoint.path]}, "body": body},
            }
        )
    return {
        "type": "object",
        "required": ["requests"],
        "properties": {
            "label": {"type": "string", "maxLength": 255},
            "requests": {"type": "array", "minItems": 1, "maxItems": 256, "items": {"oneOf": items}},
        },
    }


def _describe_inputs(path: str, method: str, operation: dict[str, Any]) -> None:
    """Constraints the handlers check that FastAPI cannot see."""
    statuses = (
        {"/v1/jobs": _STATUSES, "/v1/workflows/runs": _RUN_STATUSES}.get(path) if method == "get" else None
    )
    for parameter in operation.get("parameters", []):
        if statuses is not None and parameter.get("name") == "status":
            parameter["schema"] = {"type": "string", "pattern": f"^({statuses})(,({statuses}))*$"}
        if parameter.get("in") == "header" and parameter.get("name", "").lower() == "last-event-id":
            parameter["schema"] = {"type": "string", "pattern": r"^\s*[0-9]*\s*$"}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is None:
        return
    if (method, path) == ("post", "/v1/batches"):
        body["schema"] = _batch_body()
    elif (method, path) == ("post", "/api/inference/agent/heartbeat"):
        body["schema"] = _HEARTBEAT_BODY


def install(app: FastAPI) -> None:
    """Serve the completed document at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = complete(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
