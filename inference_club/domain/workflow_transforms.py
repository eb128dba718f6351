"""The ``transform`` ops of workflow steps: pure functions over rendered JSON values.

Each op raises :class:`TransformError` with a message a user can act on when its
input has the wrong shape; the step then fails with that message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any


class TransformError(ValueError):
    pass


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _lines(value: Any, op: str) -> list[str]:
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise TransformError(f"{op} needs text or a list of strings; got {type(value).__name__}")


def passthrough(value: Any, _options: Mapping[str, Any]) -> Any:
    return value


def pluck(value: Any, options: Mapping[str, Any]) -> list[Any]:
    name = str(options.get("field"))
    if not isinstance(value, list):
        raise TransformError(f"pluck needs a list; got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or name not in item:
            raise TransformError(f"pluck: item {i} has no field {name!r}")
        out.append(item[name])
    return out


def split_lines(value: Any, _options: Mapping[str, Any]) -> list[str]:
    return _lines(value, "split_lines")


def join(value: Any, options: Mapping[str, Any]) -> str:
    sep = options.get("sep")
    if not isinstance(value, list):
        raise TransformError(f"join needs a list; got {type(value).__name__}")
    return ("\n" if sep is None else str(sep)).join(
        v if isinstance(v, str) else "" if v is None else str(v) for v in value
    )


def zip_lists(values: Any, _options: Mapping[str, Any]) -> list[list[Any]]:
    """Element-wise pairs, as long as the shortest list."""
    if not isinstance(values, list) or not all(isinstance(v, list) for v in values):
        raise TransformError("zip needs 'inputs' that are all lists")
    return [list(group) for group in zip(*values, strict=False)]


def split_sections(value: Any, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    size = int(options.get("size") or 2)
    lines = _lines(value, "split_sections")
    return [
        {"index": n, "lines": lines[i : i + size], "text": "\n".join(lines[i : i + size])}
        for n, i in enumerate(range(0, len(lines), size))
    ]


def chunk(value: Any, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Whole sentences grouped into chunks of about ``target_words`` words."""
    target = int(options.get("target_words") or 32)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    if not isinstance(value, str):
        raise TransformError(f"chunk needs text; got {type(value).__name__}")
    chunks: list[str] = []
    current: list[str] = []
    words = 0
    for sentence in _SENTENCE.split(" ".join(value.split())):
        if not sentence:
            continue
        count = len(sentence.split())
        if current and words + count > target:
            chunks.append(" ".join(current))
            current, words = [], 0
        current.append(sentence)
        words += count
    if current:
        chunks.append(" ".join(current))
    return [{"index": i, "text": text} for i, text in enumerate(chunks)]


OPS: dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {
    "passthrough": passthrough,
    "pluck": pluck,
    "split_lines": split_lines,
    "join": join,
    "zip": zip_lists,
    "split_sections": split_sections,
    "chunk": chunk,
}


def apply(op: str, value: Any, options: Mapping[str, Any]) -> Any:
    return OPS[op](value, options)
