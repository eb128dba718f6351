"""The shipped templates load and validate; a broken template is refused with its reason."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from inference_club.services.workflow_templates import TemplateInvalid, TemplateLibrary, parse_template

GOOD: dict[str, Any] = {
    "key": "t",
    "title": "T",
    "description": "d",
    "inputs": [{"name": "topic", "label": "Topic", "type": "text", "required": True}],
    "spec": {
        "steps": [{"id": "a", "kind": "inference", "type": "llm", "body": {"prompt": "{{inputs.topic}}"}}]
    },
}


def test_the_shipped_templates_load() -> None:
    library = TemplateLibrary.load(max_steps=100)
    keys = {t.key for t in library.all()}
    assert {
        "illustrated-story",
        "image-variations",
        "storyboard-to-video",
        "song-and-cover",
        "narrated-explainer",
    } <= keys
    for template in library.all():
        assert template.summary()["step_count"] == len(template.spec["steps"])
        assert template.detail()["edges"]


def _broken(change: Any) -> str:
    data = copy.deepcopy(GOOD)
    change(data)
    with pytest.raises(TemplateInvalid) as caught:
        parse_template(data, source="t.json", max_steps=100)
    return str(caught.value)


def test_broken_templates_are_refused() -> None:
    assert parse_template(GOOD, source="t.json", max_steps=100).key == "t"
    assert "not a declared input" in _broken(
        lambda d: d["spec"]["steps"][0]["body"].update(prompt="{{inputs.x}}")
    )
    assert "b → c → b" in _broken(
        lambda d: d["spec"]["steps"].extend(
            [
                {"id": "b", "kind": "gate", "depends_on": ["c"]},
                {"id": "c", "kind": "gate", "depends_on": ["b"]},
            ]
        )
    )
    assert "type must be one of" in _broken(lambda d: d["inputs"][0].update(type="colour"))
    assert "'title'" in _broken(lambda d: d.pop("title"))
    assert "non-empty" in _broken(lambda d: d.update(spec={"steps": []}))
