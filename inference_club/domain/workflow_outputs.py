"""What a job step sends and what it keeps: request bodies and step outputs. Pure.

Step outputs by modality:

- LLM (chat, completions): ``{"text": ...}`` plus, with ``extract: "json"``, the keys of
  the parsed reply (a list lands in ``items``).
- Media (image, speech, music, video, 3D): ``{"file_id", "url", "content_type"}`` of
  the first file produced (``files`` lists all when there are several).
- Embeddings: ``{"embedding": [...]}``.
- ``map``: a list of those, in item order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from inference_club.domain.endpoints import Endpoint, ServiceType


class OutputError(ValueError):
    pass


_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.S)


# --------------------------------------------------------------------------- requests


def job_body(
    endpoint: Endpoint, body: Mapping[str, Any], model: str, *, schema: Any, schema_name: Any
) -> dict[str, Any]:
    """The JSON body a step's job sends: the rendered ``body`` with the model set.

    LLM steps may write ``prompt`` (and ``system``) instead of ``messages``; a
    ``response_schema`` becomes OpenAI's ``response_format`` json_schema.
    """
    out = {k: v for k, v in body.items() if k not in ("async", "stream")}
    out["model"] = model
    if endpoint.name == "chat.completions":
        if "messages" not in out and "prompt" in out:
            messages = []
            system = out.pop("system", None)
            if system:
                messages.append({"role": "system", "content": _text(system)})
            messages.append({"role": "user", "content": _text(out.pop("prompt"))})
            out["messages"] = messages
        if isinstance(schema, dict):
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": str(schema_name or "output"), "schema": schema, "strict": True},
            }
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


# --------------------------------------------------------------------------- answers


def reply_text(result: Any) -> str:
    """The text of a chat or completion answer."""
    if isinstance(result, str):
        return result
    if isinstance(result, dict):
        choices = result.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            first = choices[0]
            message = first.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return str(message["content"])
            if isinstance(first.get("text"), str):
                return str(first["text"])
    raise OutputError("the LLM answer holds no text")


def extract_json(text: str) -> Any:
    """Parse an LLM reply as JSON, tolerating code fences and prose around it."""
    candidates = [text.strip()]
    candidates += [m.strip() for m in _FENCE.findall(text)]
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return orjson.loads(candidate)
        except orjson.JSONDecodeError:
            continue
    raise OutputError('the reply is not JSON (extract: "json" was asked for)')


def llm_output(result: Any, *, extract: bool, schema: Any) -> dict[str, Any]:
    text = reply_text(result)
    output: dict[str, Any] = {"text": text}
    if not extract:
        return output
    parsed = extract_json(text)
    if isinstance(schema, dict):
        problems = schema_problems(parsed, schema)
        if problems:
            raise OutputError(f"the reply does not match response_schema: {problems[0]}")
    if isinstance(parsed, dict):
        output.update({k: v for k, v in parsed.items() if k != "text"})
        if "text" in parsed:
            output["json_text"] = parsed["text"]
    elif isinstance(parsed, list):
        output["items"] = parsed
    else:
        output["value"] = parsed
    return output


def media_output(files: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not files:
        raise OutputError("the provider produced no file")
    first = files[0]
    output: dict[str, Any] = {
        "file_id": first.get("id"),
        "url": first.get("url"),
        "content_type": first.get("content_type"),
    }
    if len(files) > 1:
        output["files"] = [
            {"file_id": f.get("id"), "url": f.get("url"), "content_type": f.get("content_type")}
            for f in files
        ]
    return output


def job_output(
    endpoint: Endpoint, result: Any, files: Sequence[Mapping[str, Any]], *, extract: bool, schema: Any
) -> dict[str, Any]:
    """A finished job's contribution to its step's output."""
    if endpoint.service_type is ServiceType.LLM:
        return llm_output(result, extract=extract, schema=schema)
    if endpoint.service_type is ServiceType.EMBEDDING:
        data = result.get("data") if isinstance(result, dict) else None
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise OutputError("the embeddings answer holds no data")
        return {"embedding": data[0].get("embedding")}
    return media_output(files)


# --------------------------------------------------------------------------- JSON Schema (a subset)


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_problems(value: Any, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """Check the parts of JSON Schema that structured output uses: ``type``, ``required``,
    ``properties``, ``additionalProperties: false``, ``items``, ``enum``, ``minItems``/``maxItems``."""
    problems: list[str] = []
    wanted = schema.get("type")
    if wanted is not None:
        names = wanted if isinstance(wanted, list) else [wanted]
        ok = any(
            isinstance(value, _TYPES.get(str(n), ()))
            and not (isinstance(value, bool) and n in ("integer", "number"))
            for n in names
        )
        if not ok:
            return [f"{where} should be {' or '.join(map(str, names))}"]
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        problems.append(f"{where} should be one of {schema['enum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []) or []:
            if name not in value:
                problems.append(f"{where}.{name} is required")
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name in value and isinstance(sub, dict):
                problems += schema_problems(value[name], sub, f"{where}.{name}")
        if schema.get("additionalProperties") is False:
            extra = [k for k in value if k not in properties]
            if extra:
                problems.append(f"{where}.{extra[0]} is not allowed")
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                problems += schema_problems(item, items, f"{where}[{i}]")
        if isinstance(schema.get("minItems"), int) and len(value) < schema["minItems"]:
            problems.append(f"{where} should hold at least {schema['minItems']} items")
        if isinstance(schema.get("maxItems"), int) and len(value) > schema["maxItems"]:
            problems.append(f"{where} should hold at most {schema['maxItems']} items")
    return problems
