"""Field checks of request bodies, run before anything is routed or queued.

The hub only checks what it must understand (model, stream, the fields a provider
cannot do without, their types); everything else passes through untouched. Each
endpoint's row in :mod:`~inference_club.domain.endpoints` names the check it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from inference_club.domain.dialogue import check_script
from inference_club.errors import InvalidRequest

Check = Callable[[Mapping[str, Any]], None]


def _require_str(data: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> None:
    value = data.get(name)
    if value is None:
        raise InvalidRequest(f"'{name}' is required.", param=name)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string.", param=name)
    if not allow_empty and not value.strip():
        raise InvalidRequest(f"'{name}' must not be empty.", param=name)


def _optional(data: Mapping[str, Any], name: str, kinds: tuple[type, ...], label: str) -> None:
    value = data.get(name)
    if value is None:
        return
    if isinstance(value, bool) and bool not in kinds:
        raise InvalidRequest(f"'{name}' must be {label}.", param=name)
    if not isinstance(value, kinds):
        raise InvalidRequest(f"'{name}' must be {label}.", param=name)


def check_chat(data: Mapping[str, Any]) -> None:
    messages = data.get("messages")
    if messages is None:
        raise InvalidRequest("'messages' is required.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"'messages[{i}]' must be an object with a 'role'.", param=f"messages[{i}]")
    _optional(data, "max_tokens", (int,), "an integer")
    _optional(data, "n", (int,), "an integer")


def check_completions(data: Mapping[str, Any]) -> None:
    prompt = data.get("prompt")
    if prompt is None:
        raise InvalidRequest("'prompt' is required.", param="prompt")
    if not isinstance(prompt, str | list):
        raise InvalidRequest("'prompt' must be a string or an array.", param="prompt")
    _optional(data, "max_tokens", (int,), "an integer")


def check_responses(data: Mapping[str, Any]) -> None:
    value = data.get("input")
    if value is None:
        raise InvalidRequest("'input' is required.", param="input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise InvalidRequest("'input' must be a string or a non-empty array.", param="input")
    _optional(data, "max_output_tokens", (int,), "an integer")
    _optional(data, "instructions", (str,), "a string")


def check_embeddings(data: Mapping[str, Any]) -> None:
    value = data.get("input")
    if value is None:
        raise InvalidRequest("'input' is required.", param="input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise InvalidRequest("'input' must be a string or a non-empty array.", param="input")


def check_prompt(data: Mapping[str, Any]) -> None:
    _require_str(data, "prompt")
    _optional(data, "n", (int,), "an integer")
    _optional(data, "seed", (int,), "an integer")
    _optional(data, "duration", (int, float), "a number")


def check_speech(data: Mapping[str, Any]) -> None:
    _require_str(data, "input")
    _optional(data, "voice", (str, dict), "a string")
    _optional(data, "speed", (int, float), "a number")


def check_video(data: Mapping[str, Any]) -> None:
    check_prompt(data)
    for name in ("width", "height", "fps"):
        _optional(data, name, (int,), "an integer")
    _optional(data, "image", (str,), "a data URI or base64 string")


def check_mesh(data: Mapping[str, Any]) -> None:
    if data.get("prompt") is None and data.get("image") is None:
        raise InvalidRequest("'prompt' (JSON) or 'image' (multipart) is required.", param="prompt")
    _optional(data, "prompt", (str,), "a string")
    fmt = data.get("format")
    if fmt is not None and fmt != "glb":
        raise InvalidRequest("'format' must be 'glb'.", param="format")


def check_transcription(data: Mapping[str, Any]) -> None:
    fmt = data.get("response_format")
    if fmt is not None and fmt not in ("json", "text", "srt", "vtt", "verbose_json"):
        raise InvalidRequest(
            "'response_format' must be one of json, text, srt, vtt, verbose_json.", param="response_format"
        )


def check_image_edit(data: Mapping[str, Any]) -> None:
    _require_str(data, "prompt")


def check_voice(data: Mapping[str, Any]) -> None:
    _require_str(data, "input")
    check_script(str(data["input"]))


def check_common(data: Mapping[str, Any]) -> str:
    """``model`` and ``stream`` for every endpoint; returns the model."""
    _require_str(data, "model")
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    run_async = data.get("async")
    if run_async is not None and not isinstance(run_async, bool):
        raise InvalidRequest("'async' must be a boolean.", param="async")
    return str(data["model"])
