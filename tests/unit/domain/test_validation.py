"""Request body checks: each refusal is a 400 naming the field; what the hub need not read passes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from inference_club.domain import validation as v
from inference_club.errors import InvalidRequest, InvalidScript

Check = Callable[[Mapping[str, Any]], object]


def refused(check: Check, data: Mapping[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check(data)
    return caught.value


@pytest.mark.parametrize(
    ("data", "param", "says"),
    [
        ({}, "model", "'model' is required"),
        ({"model": 3}, "model", "'model' must be a string"),
        ({"model": "  "}, "model", "'model' must not be empty"),
        ({"model": "m", "stream": "yes"}, "stream", "'stream' must be a boolean"),
        ({"model": "m", "stream": 1}, "stream", "'stream' must be a boolean"),
        ({"model": "m", "async": "true"}, "async", "'async' must be a boolean"),
    ],
)
def test_common_fields_are_named_when_wrong(data: dict[str, Any], param: str, says: str) -> None:
    error = refused(v.check_common, data)
    assert error.param == param
    assert says in error.message


def test_common_fields_return_the_model() -> None:
    assert v.check_common({"model": "llama", "stream": False, "async": True}) == "llama"
    assert v.check_common({"model": "llama", "stream": None}) == "llama"


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user"}, {"content": "no role"}]}, "messages[1]"),
        ({"messages": [{"role": "user"}, "text"]}, "messages[1]"),
        ({"messages": [{"role": 5}]}, "messages[0]"),
        ({"messages": [{"role": "user"}], "max_tokens": "10"}, "max_tokens"),
        ({"messages": [{"role": "user"}], "max_tokens": 1.5}, "max_tokens"),
        # A boolean is an int to Python, never to the hub.
        ({"messages": [{"role": "user"}], "max_tokens": True}, "max_tokens"),
        ({"messages": [{"role": "user"}], "n": "2"}, "n"),
    ],
)
def test_chat_refusals_name_the_field(data: dict[str, Any], param: str) -> None:
    assert refused(v.check_chat, data).param == param


def test_chat_lets_unknown_fields_and_nulls_through() -> None:
    v.check_chat(
        {"messages": [{"role": "user", "content": [{"type": "text"}]}], "max_tokens": None, "top_k": "x"}
    )
    v.check_chat({"messages": [{"role": "user"}], "max_tokens": 0, "n": 2})


@pytest.mark.parametrize(
    ("check", "data", "param"),
    [
        (v.check_completions, {}, "prompt"),
        (v.check_completions, {"prompt": 5}, "prompt"),
        (v.check_completions, {"prompt": "x", "max_tokens": "5"}, "max_tokens"),
        (v.check_responses, {}, "input"),
        (v.check_responses, {"input": []}, "input"),
        (v.check_responses, {"input": {"a": 1}}, "input"),
        (v.check_responses, {"input": "x", "max_output_tokens": 2.5}, "max_output_tokens"),
        (v.check_responses, {"input": "x", "instructions": ["a"]}, "instructions"),
        (v.check_embeddings, {}, "input"),
        (v.check_embeddings, {"input": []}, "input"),
        (v.check_embeddings, {"input": 7}, "input"),
        (v.check_prompt, {}, "prompt"),
        (v.check_prompt, {"prompt": ""}, "prompt"),
        (v.check_prompt, {"prompt": "a cat", "n": "2"}, "n"),
        (v.check_prompt, {"prompt": "a cat", "seed": 1.0}, "seed"),
        (v.check_prompt, {"prompt": "a cat", "duration": "5s"}, "duration"),
        (v.check_prompt, {"prompt": "a cat", "duration": False}, "duration"),
        (v.check_speech, {}, "input"),
        (v.check_speech, {"input": "hi", "voice": 3}, "voice"),
        (v.check_speech, {"input": "hi", "speed": "fast"}, "speed"),
        (v.check_video, {"prompt": "a cat", "fps": 24.0}, "fps"),
        (v.check_video, {"prompt": "a cat", "width": "640"}, "width"),
        (v.check_video, {"prompt": "a cat", "image": b"raw"}, "image"),
        (v.check_video, {"prompt": "a cat", "n": "1"}, "n"),
        (v.check_mesh, {}, "prompt"),
        (v.check_mesh, {"prompt": 5}, "prompt"),
        (v.check_mesh, {"prompt": "a cup", "format": "obj"}, "format"),
        (v.check_transcription, {"response_format": "xml"}, "response_format"),
        (v.check_image_edit, {}, "prompt"),
        (v.check_voice, {}, "input"),
    ],
)
def test_each_endpoint_check_names_the_field(check: Check, data: dict[str, Any], param: str) -> None:
    assert refused(check, data).param == param


@pytest.mark.parametrize(
    ("check", "data"),
    [
        (v.check_completions, {"prompt": ["a", "b"]}),
        (v.check_responses, {"input": [{"role": "user", "content": "x"}], "instructions": "be brief"}),
        (v.check_embeddings, {"input": "text"}),
        (v.check_prompt, {"prompt": "a cat", "n": 2, "seed": 7, "duration": 2.5}),
        (v.check_speech, {"input": "hi", "voice": {"id": "v"}, "speed": 1}),
        (v.check_video, {"prompt": "a cat", "width": 640, "height": 480, "fps": 24, "image": "data:..."}),
        (v.check_mesh, {"image": "upload"}),
        (v.check_mesh, {"prompt": "a cup", "format": "glb"}),
        (v.check_transcription, {}),
        (v.check_transcription, {"response_format": "verbose_json"}),
        (v.check_image_edit, {"prompt": "make it blue"}),
        (v.check_voice, {"input": "[S1] Hello. [S2] Hi!"}),
    ],
)
def test_valid_bodies_pass(check: Check, data: dict[str, Any]) -> None:
    check(data)


def test_a_voice_script_is_checked_by_the_dialogue_rules() -> None:
    with pytest.raises(InvalidScript) as caught:
        v.check_voice({"input": "[S1] Hello. [S1] Again."})
    assert caught.value.param == "input"
    assert "twice in a row" in caught.value.message
