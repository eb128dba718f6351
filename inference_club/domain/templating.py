"""Workflow templating: ``{{ path }}`` expressions, parsed once into a small tree.

A template is any JSON value. Inside its strings, ``{{ ... }}`` holds one *path*: a root
(``inputs``, ``steps``, ``item`` or ``index``) followed by dotted segments, where a
segment that is a whole number indexes a list. There are no filters, calls or operators,
so rendering can only look values up; no code runs, ever.

- A string that is exactly one expression renders to the raw value (a list stays a list).
- Expressions embedded in longer text are stringified (strings as they are, anything
  else as compact JSON, a missing value as the empty string).
- ``steps.<id>`` paths are the step's dependencies; they come from the parsed tree, so a
  prompt that merely *mentions* ``steps.x`` outside braces creates no dependency.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

ROOTS = frozenset({"inputs", "steps", "item", "index"})
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]+$")
_MAX_DEPTH = 32


class TemplateError(ValueError):
    """A template cannot be parsed; ``where`` is the JSON path of the bad string."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.where = where


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed ``{{ root.a.0.b }}``."""

    root: str
    segments: tuple[str, ...]

    @property
    def step_id(self) -> str | None:
        """The step a ``steps.<id>...`` path reads from."""
        return self.segments[0] if self.root == "steps" and self.segments else None

    def __str__(self) -> str:
        return ".".join((self.root, *self.segments))


@dataclass(frozen=True, slots=True)
class Text:
    """A literal piece of a string."""

    value: str


Part = Text | Path


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed string: literal text and paths in order."""

    parts: tuple[Part, ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in self.parts if isinstance(p, Path))

    @property
    def single(self) -> Path | None:
        """The path when the string is exactly one expression (surrounding spaces allowed)."""
        paths = self.paths
        if len(paths) != 1:
            return None
        if all(isinstance(p, Path) or not p.value.strip() for p in self.parts):
            return paths[0]
        return None


def parse_path(text: str) -> Path:
    raw = text.strip()
    if not raw:
        raise TemplateError("empty expression {{ }}")
    pieces = raw.split(".")
    for piece in pieces:
        if not _SEGMENT.match(piece):
            raise TemplateError(
                f"{{{{ {raw} }}}} is not a path: use dotted names and list indexes, e.g. "
                "{{ steps.outline.output.scenes.0 }}; nothing else is allowed"
            )
    root, rest = pieces[0], tuple(pieces[1:])
    if root not in ROOTS:
        raise TemplateError(
            f"{{{{ {raw} }}}} starts with {root!r}; expressions start with one of {', '.join(sorted(ROOTS))}"
        )
    if root == "steps":
        if not rest:
            raise TemplateError(f"{{{{ {raw} }}}} names no step: write steps.<id>.output...")
        if len(rest) > 1 and rest[1] != "output":
            raise TemplateError(f"{{{{ {raw} }}}}: a step exposes only 'output' (steps.{rest[0]}.output...)")
    if root == "index" and rest:
        raise TemplateError(f"{{{{ {raw} }}}}: index is a number and has no fields")
    return Path(root, rest)


def parse_string(text: str) -> Template:
    parts: list[Part] = []
    position = 0
    while True:
        start = text.find("{{", position)
        if start < 0:
            break
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateError("'{{' without a closing '}}'")
        if start > position:
            parts.append(Text(text[position:start]))
        parts.append(parse_path(text[start + 2 : end]))
        position = end + 2
    if position < len(text):
        parts.append(Text(text[position:]))
    return Template(tuple(parts))


def walk_paths(value: Any, where: str = "", depth: int = 0) -> Iterator[tuple[str, Path]]:
    """Every expression in a JSON value, with the JSON path of the string holding it."""
    if depth > _MAX_DEPTH:
        raise TemplateError("value nested too deeply", where)
    if isinstance(value, str):
        try:
            template = parse_string(value)
        except TemplateError as exc:
            raise TemplateError(exc.message, where) from None
        for path in template.paths:
            yield where, path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk_paths(item, f"{where}.{key}" if where else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk_paths(item, f"{where}[{i}]", depth + 1)


# --------------------------------------------------------------------------- rendering


def lookup(path: Path, scope: Mapping[str, Any]) -> Any:
    """The value a path names in ``scope``, or :data:`MISSING`."""
    if path.root not in scope:
        return MISSING
    value: Any = scope[path.root]
    for segment in path.segments:
        if isinstance(value, Mapping):
            if segment not in value:
                return MISSING
            value = value[segment]
        elif isinstance(value, list) and segment.lstrip("-").isdigit():
            index = int(segment)
            if not -len(value) <= index < len(value):
                return MISSING
            value = value[index]
        else:
            return MISSING
    return value


def _stringify(value: Any) -> str:
    if value is MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def render_string(text: str, scope: Mapping[str, Any]) -> Any:
    template = parse_string(text)
    single = template.single
    if single is not None:
        value = lookup(single, scope)
        return None if value is MISSING else value
    if not template.paths:
        return text
    return "".join(
        part.value if isinstance(part, Text) else _stringify(lookup(part, scope)) for part in template.parts
    )


def render(value: Any, scope: Mapping[str, Any], depth: int = 0) -> Any:
    """Render every string in a JSON value (dict keys are left as they are)."""
    if depth > _MAX_DEPTH:
        raise TemplateError("value nested too deeply")
    if isinstance(value, str):
        return render_string(value, scope)
    if isinstance(value, Mapping):
        return {key: render(item, scope, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, scope, depth + 1) for item in value]
    return value
