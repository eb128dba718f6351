"""Template input schemas and a run's inputs: defaults applied, values checked, refusals named."""

from __future__ import annotations

from typing import Any

import pytest

from inference_club.domain.workflow_inputs import MAX_TEXT, SchemaError, check_schema, clean_inputs
from inference_club.errors import InvalidRequest

FIELDS = check_schema(
    [
        {"name": "topic", "label": "Topic", "type": "text", "required": True},
        {"name": "n", "label": "Count", "type": "number", "default": 4, "min": 1, "max": 8},
        {"name": "mood", "label": "Mood", "type": "select", "default": "calm", "options": ["calm", "wild"]},
        {"name": "notes", "label": "Notes", "type": "textarea"},
    ]
)


def test_defaults_fill_what_is_missing_and_optional_inputs_are_none() -> None:
    assert clean_inputs(FIELDS, {"topic": "x"}) == {"topic": "x", "n": 4, "mood": "calm", "notes": None}
    # Blank text counts as missing: the default applies.
    assert clean_inputs(FIELDS, {"topic": "x", "mood": "  "})["mood"] == "calm"
    assert clean_inputs(FIELDS, {"topic": "x", "notes": "keep"})["notes"] == "keep"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("3", 3), ("2.5", 2.5), ("4.0", 4), (5.0, 5), (1, 1), (8, 8), (7.5, 7.5)],
)
def test_numbers_from_forms_are_read_and_whole_floats_become_ints(given: Any, expected: Any) -> None:
    value = clean_inputs(FIELDS, {"topic": "x", "n": given})["n"]
    assert value == expected
    assert type(value) is type(expected)


def test_none_is_no_inputs() -> None:
    with pytest.raises(InvalidRequest) as caught:
        clean_inputs(FIELDS, None)
    assert caught.value.param == "inputs.topic"
    assert "(Topic) is required" in caught.value.message


@pytest.mark.parametrize(
    ("given", "param", "says"),
    [
        ({}, "inputs.topic", "inputs.topic (Topic) is required"),
        ({"topic": "  "}, "inputs.topic", "required"),
        ({"topic": "x", "n": 9}, "inputs.n", "between 1 and 8; got 9"),
        ({"topic": "x", "n": 0}, "inputs.n", "between 1 and 8; got 0"),
        ({"topic": "x", "n": "many"}, "inputs.n", "must be a number"),
        ({"topic": "x", "n": True}, "inputs.n", "must be a number"),
        ({"topic": "x", "n": [1]}, "inputs.n", "must be a number"),
        ({"topic": "x", "mood": "sad"}, "inputs.mood", "one of calm, wild; got 'sad'"),
        ({"topic": "x", "extra": 1}, "inputs.extra", "not an input of this template"),
        ({"topic": 5}, "inputs.topic", "must be a string"),
        ({"topic": "x" * (MAX_TEXT + 1)}, "inputs.topic", f"longer than {MAX_TEXT}"),
    ],
)
def test_bad_inputs_are_named(given: dict[str, Any], param: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        clean_inputs(FIELDS, given)
    assert caught.value.param == param
    assert says in caught.value.message


def test_inputs_must_be_an_object() -> None:
    with pytest.raises(InvalidRequest) as caught:
        clean_inputs(FIELDS, ["x"])
    assert caught.value.param == "inputs"


def test_text_at_the_length_limit_is_kept() -> None:
    assert clean_inputs(FIELDS, {"topic": "x" * MAX_TEXT})["topic"] == "x" * MAX_TEXT


def test_a_one_sided_range_names_infinity_on_the_open_side() -> None:
    fields = check_schema([{"name": "k", "label": "K", "type": "number", "min": 2}])
    assert clean_inputs(fields, {"k": 10**9}) == {"k": 10**9}
    with pytest.raises(InvalidRequest, match="between 2 and ∞; got 1"):
        clean_inputs(fields, {"k": 1})


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ("x", "must be a list"),
        (["x"], r"inputs\[0\] must be an object"),
        ([{"name": "a", "label": "A", "type": "text", "colour": 1}], "unknown key 'colour'"),
        ([{"name": "1a", "label": "A", "type": "text"}], r"inputs\[0\].name"),
        ([{"name": "a", "label": "A", "type": "color"}], r"inputs\[0\].type must be one of"),
        ([{"name": "a", "type": "text"}], r"inputs\[0\].label"),
        ([{"name": "a", "label": "A", "type": "select"}], "a select needs 'options'"),
        ([{"name": "a", "label": "A", "type": "select", "options": []}], "a select needs 'options'"),
        ([{"name": "a", "label": "A", "type": "select", "options": [1]}], "a select needs 'options'"),
        (
            [{"name": "a", "label": "A", "type": "number", "default": 10, "max": 5}],
            r"inputs\[0\].default: inputs.a must be between",
        ),
        (
            [{"name": "a", "label": "A", "type": "text"}, {"name": "a", "label": "B", "type": "text"}],
            r"inputs\[1\].name must be a unique identifier",
        ),
    ],
)
def test_bad_schemas_say_which_field_is_wrong(fields: Any, says: str) -> None:
    with pytest.raises(SchemaError, match=says):
        check_schema(fields)


def test_a_good_schema_is_returned_as_given() -> None:
    fields = [{"name": "a_1", "label": "A", "type": "textarea", "placeholder": "…", "default": ""}]
    assert check_schema(fields) is fields
