"""Workflow specs: the step model and its validation. Pure; no I/O.

A spec is ``{"steps": [step, ...]}``. Every problem is reported as
:class:`~inference_club.errors.InvalidSpec` naming the step and the field
(``param`` = ``steps[2].over``), before anything is created.

Kinds:

- ``inference``: one job (``type`` modality or ``endpoint`` path, optional ``model``, ``body``).
- ``map``: one job per item of ``over`` (``item`` and ``index`` in ``body``).
- ``transform``: an ``op`` over ``input``/``inputs``, computed inline.
- ``collect``: the output of the step(s) named in ``from``.
- ``gate``: waits for a person to approve (optionally editing the output) or reject.

A step's dependencies are its ``depends_on`` plus every step its expressions read
(``{{steps.<id>.output...}}``) and, for ``collect``, its ``from``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inference_club.domain.endpoints import BY_NAME, Endpoint
from inference_club.domain.jobs import can_queue, job_endpoint
from inference_club.domain.templating import Path, TemplateError, walk_paths
from inference_club.errors import InvalidSpec


class StepKind(StrEnum):
    INFERENCE = "inference"
    MAP = "map"
    TRANSFORM = "transform"
    COLLECT = "collect"
    GATE = "gate"


class RunStatus(StrEnum):
    RUNNING = "RUNNING"
    AWAITING = "AWAITING"  # a gate waits for a person
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    AWAITING = "AWAITING"
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELED = "CANCELED"


RUN_TERMINAL = frozenset({RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELED})
STEP_TERMINAL = frozenset({StepStatus.DONE, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED})
#: A dependency in one of these states means the step can never run.
STEP_BLOCKING = frozenset({StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED})

#: Modality → the endpoint a step of that ``type`` calls.
MODALITIES: dict[str, str] = {
    "llm": "chat.completions",
    "image": "images.generations",
    "video": "videos.generations",
    "music": "music.generations",
    "tts": "audio.speech",
    "stt": "audio.transcriptions",
    "voice": "voice.generations",
    "mesh": "3d.generations",
    "embedding": "embeddings",
}

TRANSFORM_OPS = frozenset({"passthrough", "pluck", "split_lines", "join", "zip", "split_sections", "chunk"})

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
_COMMON_FIELDS = {"id", "kind", "title", "description", "depends_on"}
_FIELDS: dict[StepKind, set[str]] = {
    StepKind.INFERENCE: {
        "type",
        "endpoint",
        "model",
        "body",
        "extract",
        "response_schema",
        "schema_name",
        "inline_files",
    },
    StepKind.MAP: {
        "type",
        "endpoint",
        "model",
        "body",
        "over",
        "extract",
        "response_schema",
        "schema_name",
        "inline_files",
    },
    StepKind.TRANSFORM: {"op", "input", "inputs", "field", "sep", "size", "target_words"},
    StepKind.COLLECT: {"from"},
    StepKind.GATE: {"instructions"},
}
_MAX_TITLE = 200


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One validated step. ``needs`` = all dependencies, in spec order."""

    id: str
    kind: StepKind
    position: int
    title: str
    needs: tuple[str, ...]
    raw: dict[str, Any]
    endpoint: Endpoint | None = None
    model: str | None = None

    @property
    def is_job_step(self) -> bool:
        return self.kind in (StepKind.INFERENCE, StepKind.MAP)

    @property
    def extract_json(self) -> bool:
        return self.raw.get("extract") == "json" or self.raw.get("response_schema") is not None


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    steps: tuple[StepSpec, ...]
    by_id: dict[str, StepSpec] = field(default_factory=dict)

    def edges(self) -> list[dict[str, str]]:
        return [{"from": need, "to": step.id} for step in self.steps for need in step.needs]

    def descendants(self, step_id: str) -> list[str]:
        """Every step that (transitively) depends on ``step_id``, in spec order."""
        found: set[str] = set()
        frontier = [step_id]
        while frontier:
            current = frontier.pop()
            for step in self.steps:
                if current in step.needs and step.id not in found:
                    found.add(step.id)
                    frontier.append(step.id)
        return [s.id for s in self.steps if s.id in found]

    def to_json(self) -> dict[str, Any]:
        """The spec as stored on a run: each step as written, plus its resolved model."""
        steps = []
        for step in self.steps:
            data = dict(step.raw)
            if step.model is not None:
                data["model"] = step.model
            steps.append(data)
        return {"steps": steps}

    def with_models(self, models: Mapping[str, str]) -> WorkflowSpec:
        steps = tuple(
            StepSpec(s.id, s.kind, s.position, s.title, s.needs, s.raw, s.endpoint, models.get(s.id, s.model))
            for s in self.steps
        )
        return WorkflowSpec(steps, {s.id: s for s in steps})


def _fail(message: str, param: str) -> InvalidSpec:
    return InvalidSpec(message, param=param)


def step_endpoint(raw: Mapping[str, Any], where: str) -> Endpoint:
    """The endpoint of an inference/map step, from ``type`` or ``endpoint``."""
    kind_of = raw.get("type")
    named = raw.get("endpoint")
    if kind_of is not None and named is not None:
        raise _fail(f"{where}: give 'type' or 'endpoint', not both.", f"{where}.type")
    if kind_of is not None:
        if not isinstance(kind_of, str) or kind_of not in MODALITIES:
            raise _fail(
                f"{where}.type must be one of {', '.join(MODALITIES)}; got {kind_of!r}.", f"{where}.type"
            )
        endpoint = BY_NAME[MODALITIES[kind_of]]
        field_name = "type"
    elif named is not None:
        if not isinstance(named, str) or (found := job_endpoint(named)) is None:
            raise _fail(
                f'{where}.endpoint: unknown endpoint {named!r} (e.g. "/v1/images/generations").',
                f"{where}.endpoint",
            )
        endpoint = found
        field_name = "endpoint"
    else:
        raise _fail(
            f"{where} needs a 'type' (a modality such as llm or image) or an 'endpoint'.", f"{where}.type"
        )
    if not can_queue(endpoint):
        raise _fail(
            f"{where}.{field_name}: {endpoint.path} takes file uploads, which a workflow step cannot send.",
            f"{where}.{field_name}",
        )
    return endpoint


def _refs(raw: Mapping[str, Any], where: str, kind: StepKind) -> list[Path]:
    paths: list[Path] = []
    for name, value in raw.items():
        if name in ("id", "kind", "title", "description", "depends_on", "from", "response_schema"):
            continue
        try:
            found = list(walk_paths(value, f"{where}.{name}"))
        except TemplateError as exc:
            raise _fail(f"{exc.where or where}: {exc.message}", exc.where or f"{where}.{name}") from None
        for location, path in found:
            if path.root in ("item", "index") and not (kind is StepKind.MAP and name == "body"):
                raise _fail(
                    f"{location}: {{{{ {path} }}}} is only available in the body of a map step.", location
                )
            paths.append(path)
    return paths


def _names(value: Any, param: str, what: str) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise _fail(f"{param} must be a step id or a list of step ids ({what}).", param)
    return list(items)


def _check_fields(raw: Mapping[str, Any], kind: StepKind, where: str) -> None:
    allowed = _COMMON_FIELDS | _FIELDS[kind]
    for name in raw:
        if name not in allowed:
            raise _fail(
                f"{where}: field {name!r} is not used by a {kind.value} step "
                f"(it takes {', '.join(sorted(allowed))}).",
                f"{where}.{name}",
            )
    title = raw.get("title")
    if title is not None and (not isinstance(title, str) or len(title) > _MAX_TITLE):
        raise _fail(f"{where}.title must be a string of at most {_MAX_TITLE} characters.", f"{where}.title")


def _check_kind_fields(raw: Mapping[str, Any], kind: StepKind, where: str) -> Endpoint | None:
    if kind in (StepKind.INFERENCE, StepKind.MAP):
        endpoint = step_endpoint(raw, where)
        body = raw.get("body", {})
        if not isinstance(body, dict):
            raise _fail(f"{where}.body must be a JSON object.", f"{where}.body")
        model = raw.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise _fail(f"{where}.model must be a non-empty string.", f"{where}.model")
        extract = raw.get("extract")
        if extract is not None and extract != "json":
            raise _fail(f'{where}.extract must be "json".', f"{where}.extract")
        schema = raw.get("response_schema")
        if schema is not None and not isinstance(schema, dict):
            raise _fail(f"{where}.response_schema must be a JSON Schema object.", f"{where}.response_schema")
        if (extract is not None or schema is not None) and endpoint.service_type.value != "llm":
            raise _fail(
                f"{where}: 'extract' and 'response_schema' apply to llm steps only.", f"{where}.extract"
            )
        inline = raw.get("inline_files")
        if inline is not None and (
            not isinstance(inline, list) or not all(isinstance(n, str) and n for n in inline)
        ):
            raise _fail(f"{where}.inline_files must be a list of body field names.", f"{where}.inline_files")
        if kind is StepKind.MAP and raw.get("over") is None:
            raise _fail(
                f"{where} is a map step and needs 'over' (an expression giving a list).", f"{where}.over"
            )
        return endpoint
    if kind is StepKind.TRANSFORM:
        op = raw.get("op", "passthrough")
        if op not in TRANSFORM_OPS:
            raise _fail(
                f"{where}.op must be one of {', '.join(sorted(TRANSFORM_OPS))}; got {op!r}.", f"{where}.op"
            )
        if op == "zip":
            if not isinstance(raw.get("inputs"), list) or len(raw["inputs"]) < 2:
                raise _fail(f"{where}: zip needs 'inputs', a list of at least two lists.", f"{where}.inputs")
        elif "input" not in raw:
            raise _fail(f"{where}: transform {op!r} needs 'input'.", f"{where}.input")
        if op == "pluck" and not isinstance(raw.get("field"), str):
            raise _fail(f"{where}: pluck needs 'field', the key to take from each item.", f"{where}.field")
        for name in ("size", "target_words"):
            value = raw.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000
            ):
                raise _fail(f"{where}.{name} must be a whole number from 1 to 10000.", f"{where}.{name}")
        if raw.get("sep") is not None and not isinstance(raw["sep"], str):
            raise _fail(f"{where}.sep must be a string.", f"{where}.sep")
    if kind is StepKind.COLLECT and not raw.get("from"):
        raise _fail(
            f"{where} is a collect step and needs 'from' (a step id or a list of them).", f"{where}.from"
        )
    return None


def validate_spec(data: Any, *, max_steps: int) -> WorkflowSpec:
    """Check a spec completely and return it with every step's dependencies."""
    if not isinstance(data, dict):
        raise _fail("'spec' must be an object with a 'steps' list.", "spec")
    unknown = set(data) - {"steps", "name", "description"}
    if unknown:
        raise _fail(
            f"spec: unknown field {sorted(unknown)[0]!r} (a spec holds 'steps').",
            f"spec.{sorted(unknown)[0]}",
        )
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _fail("spec.steps must be a non-empty list of steps.", "steps")
    if len(raw_steps) > max_steps:
        raise _fail(f"A workflow holds at most {max_steps} steps; this one has {len(raw_steps)}.", "steps")
    seen: dict[str, int] = {}
    parsed: list[tuple[dict[str, Any], StepKind, Endpoint | None, list[str], list[str]]] = []
    for index, raw in enumerate(raw_steps):
        where = f"steps[{index}]"
        if not isinstance(raw, dict):
            raise _fail(f"{where} must be an object.", where)
        step_id = raw.get("id")
        if not isinstance(step_id, str) or not _ID.match(step_id):
            raise _fail(
                f"{where}.id must be a string of letters, digits, '_' or '-' starting with a letter "
                "(at most 64).",
                f"{where}.id",
            )
        where = f"steps[{index}] ({step_id})"
        if step_id in seen:
            raise _fail(
                f"Duplicate step id {step_id!r} (steps[{seen[step_id]}] and steps[{index}]).",
                f"steps[{index}].id",
            )
        seen[step_id] = index
        try:
            kind = StepKind(str(raw.get("kind")))
        except ValueError:
            raise _fail(
                f"{where}.kind must be one of {', '.join(StepKind)}; got {raw.get('kind')!r}.",
                f"steps[{index}].kind",
            ) from None
        param = f"steps[{index}]"
        _check_fields(raw, kind, param)
        endpoint = _check_kind_fields(raw, kind, param)
        explicit = _names(raw.get("depends_on"), f"{param}.depends_on", "its dependencies")
        sources = (
            _names(raw.get("from"), f"{param}.from", "the steps to collect")
            if kind is StepKind.COLLECT
            else []
        )
        referenced = [p.step_id for p in _refs(raw, param, kind) if p.step_id is not None]
        needs: list[str] = []
        for name in [*explicit, *sources, *referenced]:
            if name not in needs:
                needs.append(name)
        parsed.append((raw, kind, endpoint, needs, sources))
    for index, (raw, _kind, _endpoint, needs, _sources) in enumerate(parsed):
        for need in needs:
            if need not in seen:
                raise _fail(
                    f"steps[{index}] ({raw['id']}) refers to unknown step {need!r}.",
                    f"steps[{index}].depends_on",
                )
            if need == raw["id"]:
                raise _fail(f"steps[{index}] ({need}) depends on itself.", f"steps[{index}].depends_on")
    graph = {raw["id"]: needs for raw, _k, _e, needs, _s in parsed}
    cycle = find_cycle(graph)
    if cycle:
        first = seen[cycle[0]]
        raise _fail(f"The steps form a cycle: {' → '.join(cycle)}.", f"steps[{first}].depends_on")
    steps = tuple(
        StepSpec(
            id=raw["id"],
            kind=kind,
            position=index,
            title=str(raw.get("title") or raw["id"]),
            needs=tuple(needs),
            raw=dict(raw),
            endpoint=endpoint,
            model=_named_model(raw),
        )
        for index, (raw, kind, endpoint, needs, _s) in enumerate(parsed)
    )
    return WorkflowSpec(steps, {s.id: s for s in steps})


def _named_model(raw: Mapping[str, Any]) -> str | None:
    """The step's ``model``, or a ``model`` written inside its ``body``."""
    if isinstance(raw.get("model"), str):
        return str(raw["model"])
    body = raw.get("body")
    if isinstance(body, dict) and isinstance(body.get("model"), str) and body["model"].strip():
        return str(body["model"])
    return None


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """A dependency cycle as ``[a, b, ..., a]``, or ``[]``. ``graph`` maps a node to what it needs."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        color[node] = grey
        stack.append(node)
        for need in graph.get(node, ()):
            if color.get(need) == grey:
                start = stack.index(need)
                # Written in the direction work flows: dependency first.
                return list(reversed([*stack[start:], need]))
            if color.get(need) == white:
                found = visit(need)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return []

    for node in graph:
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return []
