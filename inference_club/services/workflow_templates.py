"""Built-in workflow templates: JSON files shipped in ``inference_club/workflows/templates``.

Each file is ``{key, title, description, inputs: [field...], spec: {steps: [...]}}``. They
are loaded and validated once when the hub starts, by the same validator as user specs
(plus: every ``{{inputs.x}}`` must name a declared input), so a broken template stops
the hub instead of failing a user's run.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from inference_club.domain.templating import walk_paths
from inference_club.domain.workflow_inputs import SchemaError, check_schema
from inference_club.domain.workflow_spec import WorkflowSpec, validate_spec
from inference_club.errors import InvalidSpec

_PACKAGE = "inference_club.workflows"


class TemplateInvalid(Exception):
    """A shipped template fails validation (a bug in the package, found at start-up)."""


@dataclass(frozen=True, slots=True)
class WorkflowTemplate:
    key: str
    title: str
    description: str
    inputs: list[dict[str, Any]]
    spec: dict[str, Any]
    parsed: WorkflowSpec

    def summary(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "description": self.description,
            "inputs": self.inputs,
            "step_count": len(self.parsed.steps),
        }

    def detail(self) -> dict[str, Any]:
        return {**self.summary(), "spec": self.spec, "edges": self.parsed.edges()}


def parse_template(data: Any, *, source: str, max_steps: int) -> WorkflowTemplate:
    if not isinstance(data, dict):
        raise TemplateInvalid(f"{source}: a template is a JSON object")
    for name in ("key", "title", "description"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise TemplateInvalid(f"{source}: '{name}' must be a non-empty string")
    try:
        inputs = check_schema(data.get("inputs", []))
        parsed = validate_spec(data.get("spec"), max_steps=max_steps)
    except SchemaError as exc:
        raise TemplateInvalid(f"{source}: {exc}") from None
    except InvalidSpec as exc:
        raise TemplateInvalid(f"{source}: {exc.message}") from None
    declared = {f["name"] for f in inputs}
    for where, path in walk_paths(data["spec"]):
        if path.root == "inputs" and (not path.segments or path.segments[0] not in declared):
            raise TemplateInvalid(f"{source}: {where} reads {path}, which is not a declared input")
    return WorkflowTemplate(data["key"], data["title"], data["description"], inputs, data["spec"], parsed)


class TemplateLibrary:
    def __init__(self, templates: list[WorkflowTemplate]) -> None:
        self._by_key = {t.key: t for t in templates}

    def __repr__(self) -> str:
        return f"<TemplateLibrary {sorted(self._by_key)}>"

    @classmethod
    def load(cls, *, max_steps: int) -> TemplateLibrary:
        templates: list[WorkflowTemplate] = []
        folder = resources.files(_PACKAGE).joinpath("templates")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".json"):
                continue
            try:
                data = orjson.loads(entry.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise TemplateInvalid(f"{entry.name}: not JSON: {exc}") from None
            template = parse_template(data, source=entry.name, max_steps=max_steps)
            if template.key != entry.name.removesuffix(".json"):
                raise TemplateInvalid(f"{entry.name}: key {template.key!r} does not match the file name")
            templates.append(template)
        return cls(templates)

    def all(self) -> list[WorkflowTemplate]:
        return list(self._by_key.values())

    def get(self, key: str) -> WorkflowTemplate | None:
        return self._by_key.get(key)
