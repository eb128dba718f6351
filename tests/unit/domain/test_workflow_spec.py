"""Workflow spec validation: every invalid_spec case names the step and the field."""

from __future__ import annotations

from typing import Any

import pytest

from inference_club.domain.workflow_spec import StepKind, find_cycle, validate_spec
from inference_club.errors import InvalidSpec


def _spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(steps)}


def _llm(step_id: str, prompt: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "inference", "type": "llm", "body": {"prompt": prompt}, **extra}


def _invalid(spec: Any, max_steps: int = 100) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        validate_spec(spec, max_steps=max_steps)
    return caught.value


def test_a_valid_spec_gets_dependencies_from_depends_on_refs_and_from() -> None:
    spec = validate_spec(
        _spec(
            _llm("a"),
            {
                "id": "b",
                "kind": "map",
                "type": "image",
                "over": "{{steps.a.output.items}}",
                "body": {"prompt": "{{item}} {{index}}"},
            },
            {"id": "c", "kind": "collect", "from": "b"},
            {"id": "d", "kind": "gate", "depends_on": ["a", "c"]},
        ),
        max_steps=100,
    )
    assert [s.needs for s in spec.steps] == [(), ("a",), ("b",), ("a", "c")]
    assert spec.by_id["b"].kind is StepKind.MAP and spec.by_id["b"].endpoint is not None
    assert spec.by_id["b"].endpoint.path == "/v1/images/generations"
    assert spec.edges() == [
        {"from": "a", "to": "b"},
        {"from": "b", "to": "c"},
        {"from": "a", "to": "d"},
        {"from": "c", "to": "d"},
    ]
    assert spec.descendants("a") == ["b", "c", "d"]
    assert spec.descendants("c") == ["d"]


def test_text_that_mentions_steps_outside_braces_creates_no_dependency() -> None:
    spec = validate_spec(
        _spec(_llm("x"), _llm("y", "talk about steps.x and {steps.x.output}")), max_steps=100
    )
    assert spec.by_id["y"].needs == ()


def test_a_cycle_is_named() -> None:
    error = _invalid(
        _spec(
            _llm("a", "{{steps.c.output.text}}"),
            _llm("b", "{{steps.a.output.text}}"),
            _llm("c", depends_on=["b"]),
        )
    )
    assert "cycle" in error.message
    assert "a → b → c → a" in error.message
    assert error.param == "steps[0].depends_on"


def test_find_cycle_reports_nothing_for_a_dag() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) == []
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


@pytest.mark.parametrize(
    ("spec", "param", "words"),
    [
        ([], "spec", "object"),
        ({"steps": []}, "steps", "non-empty"),
        (_spec(_llm("a"), _llm("a")), "steps[1].id", "Duplicate step id 'a'"),
        (_spec({"id": "a", "kind": "loop"}), "steps[0].kind", "kind must be one of"),
        (_spec(_llm("a", depends_on=["ghost"])), "steps[0].depends_on", "unknown step 'ghost'"),
        (_spec(_llm("a", "{{steps.ghost.output}}")), "steps[0].depends_on", "unknown step 'ghost'"),
        (
            _spec({"id": "m", "kind": "map", "type": "image", "body": {"prompt": "x"}}),
            "steps[0].over",
            "needs 'over'",
        ),
        (_spec({"id": "a", "kind": "inference", "type": "hologram"}), "steps[0].type", "must be one of"),
        (
            _spec({"id": "a", "kind": "inference", "endpoint": "/v1/nope"}),
            "steps[0].endpoint",
            "unknown endpoint",
        ),
        (_spec({"id": "a", "kind": "inference", "type": "stt"}), "steps[0].type", "file uploads"),
        (_spec({"id": "a", "kind": "inference"}), "steps[0].type", "needs a 'type'"),
        (_spec(_llm("a", "{{ os.system }}")), "steps[0].body.prompt", "starts with 'os'"),
        (_spec(_llm("a", "{{ inputs.x | upper }}")), "steps[0].body.prompt", "not a path"),
        (_spec(_llm("a", "{{ inputs.x")), "steps[0].body.prompt", "closing"),
        (_spec(_llm("a", "{{ item }}")), "steps[0].body.prompt", "only available in the body of a map"),
        (_spec(_llm("a", bogus=1)), "steps[0].bogus", "not used by a inference step"),
        (
            _spec({"id": "t", "kind": "transform", "op": "explode", "input": "x"}),
            "steps[0].op",
            "op must be one of",
        ),
        (
            _spec({"id": "t", "kind": "transform", "op": "zip", "inputs": ["x"]}),
            "steps[0].inputs",
            "zip needs",
        ),
        (
            _spec({"id": "t", "kind": "transform", "op": "pluck", "input": "x"}),
            "steps[0].field",
            "pluck needs",
        ),
        (_spec({"id": "c", "kind": "collect"}), "steps[0].from", "needs 'from'"),
        (_spec({"id": "9x", "kind": "gate"}), "steps[0].id", "letters"),
        (
            _spec({"id": "a", "kind": "inference", "type": "image", "extract": "json"}),
            "steps[0].extract",
            "llm steps only",
        ),
        (_spec(_llm("a", "{{steps.a.output}}")), "steps[0].depends_on", "depends on itself"),
        (_spec(_llm("a", inline_files="image")), "steps[0].inline_files", "list of body field names"),
    ],
)
def test_invalid_specs_name_the_field(spec: Any, param: str, words: str) -> None:
    error = _invalid(spec)
    assert error.param == param, error.message
    assert words in error.message
    assert error.status == 400 and error.type == "invalid_spec"


def test_too_many_steps() -> None:
    error = _invalid(_spec(*[_llm(f"s{i}") for i in range(4)]), max_steps=3)
    assert "at most 3 steps" in error.message and error.param == "steps"


def test_to_json_records_resolved_models() -> None:
    spec = validate_spec(_spec(_llm("a"), {"id": "g", "kind": "gate"}), max_steps=10).with_models({"a": "m1"})
    assert spec.to_json()["steps"][0]["model"] == "m1"
    assert "model" not in spec.to_json()["steps"][1]


def test_a_model_in_the_body_counts_as_the_steps_model() -> None:
    spec = validate_spec(
        _spec({"id": "a", "kind": "inference", "type": "llm", "body": {"model": "m2", "prompt": "x"}}),
        max_steps=10,
    )
    assert spec.by_id["a"].model == "m2"
