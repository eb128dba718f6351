"""Transform ops between workflow steps: the values they take and the shapes they refuse."""

from __future__ import annotations

from typing import Any

import pytest

from inference_club.domain.workflow_transforms import TransformError, apply


def test_ops() -> None:
    assert apply("passthrough", {"a": 1}, {}) == {"a": 1}
    assert apply("pluck", [{"a": 1}, {"a": 2}], {"field": "a"}) == [1, 2]
    assert apply("split_lines", " one \n\n two\n", {}) == ["one", "two"]
    assert apply("join", ["a", "b", 3], {"sep": ", "}) == "a, b, 3"
    assert apply("join", ["a", "b"], {}) == "a\nb"
    assert apply("zip", [[1, 2, 3], ["a", "b"]], {}) == [[1, "a"], [2, "b"]]
    assert apply("split_sections", "1\n2\n3", {"size": 2}) == [
        {"index": 0, "lines": ["1", "2"], "text": "1\n2"},
        {"index": 1, "lines": ["3"], "text": "3"},
    ]
    chunks = apply("chunk", "One two three. Four five. Six seven eight nine.", {"target_words": 5})
    assert chunks == [
        {"index": 0, "text": "One two three. Four five."},
        {"index": 1, "text": "Six seven eight nine."},
    ]


@pytest.mark.parametrize(
    ("op", "value", "options"),
    [
        ("pluck", "text", {"field": "a"}),
        ("pluck", [{"b": 1}], {"field": "a"}),
        ("join", "x", {}),
        ("zip", [[1], "x"], {}),
        ("split_lines", 5, {}),
        ("chunk", 5, {}),
    ],
)
def test_ops_refuse_wrong_shapes(op: str, value: Any, options: dict[str, Any]) -> None:
    with pytest.raises(TransformError):
        apply(op, value, options)
