"""Templating: parsed paths, raw values for a lone expression, no code."""

from __future__ import annotations

import pytest

from inference_club.domain.templating import (
    MISSING,
    Path,
    TemplateError,
    lookup,
    parse_string,
    render,
    walk_paths,
)

SCOPE = {
    "inputs": {"topic": "tides", "n": 3},
    "steps": {"outline": {"output": {"scenes": [{"text": "one"}, {"text": "two"}], "title": "T"}}},
    "item": {"image_prompt": "a boat"},
    "index": 1,
}


def test_a_lone_expression_yields_the_raw_value() -> None:
    assert render("{{steps.outline.output.scenes}}", SCOPE) == [{"text": "one"}, {"text": "two"}]
    assert render("  {{ inputs.n }} ", SCOPE) == 3
    assert render("{{index}}", SCOPE) == 1


def test_embedded_expressions_are_stringified() -> None:
    assert render("About {{inputs.topic}} x{{inputs.n}}", SCOPE) == "About tides x3"
    assert render("{{steps.outline.output.scenes.1.text}}!", SCOPE) == "two!"
    assert render("[{{steps.outline.output.scenes.0}}]", SCOPE) == '[{"text":"one"}]'
    assert render("missing: '{{inputs.nope}}'", SCOPE) == "missing: ''"
    assert render("{{inputs.nope}}", SCOPE) is None


def test_render_recurses_through_objects_and_lists() -> None:
    body = {"prompt": "{{item.image_prompt}}", "list": ["{{index}}", 2], "n": 4}
    assert render(body, SCOPE) == {"prompt": "a boat", "list": [1, 2], "n": 4}


def test_lookup_indexes_lists_and_reports_missing() -> None:
    assert lookup(Path("steps", ("outline", "output", "scenes", "-1", "text")), SCOPE) == "two"
    assert lookup(Path("steps", ("outline", "output", "scenes", "5")), SCOPE) is MISSING
    assert lookup(Path("inputs", ("topic", "x")), SCOPE) is MISSING


def test_paths_are_found_by_parsing_not_by_pattern() -> None:
    found = list(walk_paths({"a": "see steps.x", "b": ["{{steps.y.output}}"], "c": {"d": "{{inputs.z}}"}}))
    assert [(where, str(path)) for where, path in found] == [("b[0]", "steps.y.output"), ("c.d", "inputs.z")]
    assert found[0][1].step_id == "y"


@pytest.mark.parametrize(
    "text",
    [
        "{{ __import__('os') }}",
        "{{ inputs.a + 1 }}",
        "{{ inputs['a'] }}",
        "{{}}",
        "{{ x }}",
        "{{ steps }}",
        "{{ steps.a.input }}",
        "{{ index.0 }}",
        "{{ inputs.a }",
    ],
)
def test_anything_but_a_path_is_refused(text: str) -> None:
    with pytest.raises(TemplateError):
        parse_string(text)


def test_single_detects_exactly_one_expression() -> None:
    assert parse_string("{{inputs.a}}").single == Path("inputs", ("a",))
    assert parse_string("{{inputs.a}}{{inputs.b}}").single is None
    assert parse_string("x {{inputs.a}}").single is None
