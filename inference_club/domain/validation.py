"""Field checks per endpoint, run before anything is routed or queued.

The hub only checks what it must understand (model, stream, the fields a provider
cannot do without, their types); everything else passes through untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from inference_club.errors import InvalidRequest, NoProvider

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


def _chat(data: Mapping[str, Any]) -> None:
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


def _completions(data: Mapping[str, Any]) -> None:
    prompt = data.get("prompt")
    if prompt is None:
        raise InvalidRequest("'prompt' is required.", param="prompt")
    if not isinstance(prompt, str | list):
        raise InvalidRequest("'prompt' must be a string or an array.", param="prompt")
    _optional(data, "max_tokens", (int,), "an integer")


def _embeddings(data: Mapping[str, Any]) -> None:
    value = data.get("input")
    if value is None:
        raise InvalidRequest("'input' is required.", param="input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise InvalidRequest("'input' must be a string or a non-empty array.", param="input")


def _prompt(data: Mapping[str, Any]) -> None:
    _require_str(data, "prompt")
    _optional(data, "n", (int,), "an integer")
    _optional(data, "seed", (int,), "an integer")
    _optional(data, "duration", (int, float), "a number")


def _speech(data: Mapping[str, Any]) -> None:
    _require_str(data, "input")
    _optional(data, "voice", (str, dict), "a string")
    _optional(data, "speed", (int, float), "a number")


def _video(data: Mapping[str, Any]) -> None:
    _prompt(data)
    for name in ("width", "height", "fps"):
        _optional(data, name, (int,), "an integer")
    _optional(data, "image", (str,), "a data URI or base64 string")


def _mesh(data: Mapping[str, Any]) -> None:
    if data.get("prompt") is None and data.get("image") is None:
        raise InvalidRequest("'prompt' (JSON) or 'image' (multipart) is required.", param="prompt")
    _optional(data, "prompt", (str,), "a string")
    fmt = data.get("format")
    if fmt is not None and fmt != "glb":
        raise InvalidRequest("'format' must be 'glb'.", param="format")


def _transcription(data: Mapping[str, Any]) -> None:
    fmt = data.get("response_format")
    if fmt is not None and fmt not in ("json", "text", "srt", "vtt", "verbose_json"):
        raise InvalidRequest(
            "'response_format' must be one of json, text, srt, vtt, verbose_json.", param="response_format"
        )


def _image_edit(data: Mapping[str, Any]) -> None:
    _require_str(data, "prompt")


def _voice(data: Mapping[str, Any]) -> None:
    _require_str(data, "input")


CHECKS: dict[str, Check] = {
    "chat.completions": _chat,
    "completions": _completions,
    "embeddings": _embeddings,
    "audio.transcriptions": _transcription,
    "audio.speech": _speech,
    "images.generations": _prompt,
    "images.edits": _image_edit,
    "music.generations": _prompt,
    "videos.generations": _video,
    "voice.generations": _voice,
    "3d.generations": _mesh,
}

#: Upload fields each multipart endpoint needs, and the content types it takes.
REQUIRED_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "audio.transcriptions": (("file",),),
    "images.edits": (("image", "image[]"),),
}
ACCEPTED_UPLOADS: dict[str, tuple[str, ...]] = {
    "audio.transcriptions": ("audio/", "video/", "application/octet-stream"),
    "images.edits": ("image/", "application/octet-stream"),
    "voice.generations": ("audio/", "application/octet-stream"),
    "3d.generations": ("image/", "application/octet-stream"),
}


#: Endpoints where ``model`` may be omitted: the hub picks a model that has the feature.
MODEL_OPTIONAL = frozenset({"voice.generations"})


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


def validate(
    endpoint_name: str, data: Mapping[str, Any], *, default_model: Callable[[], str | None] | None = None
) -> str:
    if data.get("model") is None and endpoint_name in MODEL_OPTIONAL and default_model is not None:
        CHECKS[endpoint_name](data)
        chosen = default_model()
        if chosen is None:
            raise NoProvider("No online provider offers this endpoint to this user.", param="model")
        return chosen
    model = check_common(data)
    CHECKS[endpoint_name](data)
    return model
