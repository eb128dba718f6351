"""What a step's job sends and keeps: request bodies, reply text, JSON extraction, outputs by modality."""

from __future__ import annotations

from typing import Any

import pytest

from inference_club.domain.endpoints import BY_NAME
from inference_club.domain.workflow_outputs import (
    OutputError,
    extract_json,
    job_body,
    job_output,
    llm_output,
    media_output,
    reply_text,
    schema_problems,
)

CHAT = BY_NAME["chat.completions"]


def _chat(text: str) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


# --------------------------------------------------------------------------- request bodies


def test_job_body_turns_prompt_into_messages_and_schema_into_response_format() -> None:
    body = job_body(
        CHAT,
        {"prompt": "hi", "system": "be brief", "stream": True, "async": True, "temperature": 0.2},
        "m",
        schema={"type": "object"},
        schema_name="story",
    )
    assert body == {
        "model": "m",
        "temperature": 0.2,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "story", "schema": {"type": "object"}, "strict": True},
        },
    }


def test_job_body_writes_structured_prompts_as_json_text_and_names_an_unnamed_schema() -> None:
    body = job_body(CHAT, {"prompt": {"scenes": [1, 2]}}, "m", schema={"type": "array"}, schema_name=None)
    assert body["messages"] == [{"role": "user", "content": '{"scenes":[1,2]}'}]
    assert body["response_format"]["json_schema"]["name"] == "output"


def test_job_body_keeps_given_messages_and_ignores_a_non_object_schema() -> None:
    messages = [{"role": "user", "content": "as is"}]
    body = job_body(
        CHAT, {"messages": messages, "prompt": "unused", "model": "x"}, "m", schema="no", schema_name="s"
    )
    assert body == {"messages": messages, "prompt": "unused", "model": "m"}


def test_job_body_of_other_endpoints_only_sets_the_model() -> None:
    body = job_body(
        BY_NAME["images.generations"],
        {"prompt": "a cat", "system": "s", "stream": False},
        "sd",
        schema={"type": "object"},
        schema_name="x",
    )
    assert body == {"prompt": "a cat", "system": "s", "model": "sd"}


# --------------------------------------------------------------------------- reply text and JSON


@pytest.mark.parametrize(
    ("result", "text"),
    [
        ("plain", "plain"),
        (_chat("hi"), "hi"),
        ({"choices": [{"text": "completion"}]}, "completion"),
        ({"choices": [{"message": {"content": None}, "text": "fallback"}]}, "fallback"),
    ],
)
def test_reply_text_reads_chat_and_completion_answers(result: Any, text: str) -> None:
    assert reply_text(result) == text


@pytest.mark.parametrize("result", [None, {}, {"choices": []}, {"choices": ["x"]}, {"choices": [{}]}, 5])
def test_an_answer_without_text_is_an_output_error(result: Any) -> None:
    with pytest.raises(OutputError, match="no text"):
        reply_text(result)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('Sure! Here it is:\n```\n{"a": 1}\n```\nEnjoy.', {"a": 1}),
        ('Here: {"a": 1} done', {"a": 1}),
        ("The list: [1, 2, 3].", [1, 2, 3]),
        ("42", 42),
    ],
)
def test_extract_json_tolerates_fences_and_prose(text: str, value: Any) -> None:
    assert extract_json(text) == value


@pytest.mark.parametrize("text", ["no json here", "{broken", "} backwards {"])
def test_extract_json_fails_clearly(text: str) -> None:
    with pytest.raises(OutputError, match="not JSON"):
        extract_json(text)


# --------------------------------------------------------------------------- outputs


def test_llm_output_without_extract_is_the_text_only() -> None:
    assert llm_output(_chat('{"a": 1}'), extract=False, schema={"type": "array"}) == {"text": '{"a": 1}'}


def test_llm_output_spreads_an_object_and_keeps_its_own_text_apart() -> None:
    out = llm_output(_chat('{"title": "T", "text": "body"}'), extract=True, schema=None)
    assert out == {"text": '{"title": "T", "text": "body"}', "title": "T", "json_text": "body"}


def test_llm_output_puts_a_list_in_items_and_a_scalar_in_value() -> None:
    assert llm_output(_chat("[1, 2]"), extract=True, schema=None) == {"text": "[1, 2]", "items": [1, 2]}
    assert llm_output(_chat("true"), extract=True, schema=None) == {"text": "true", "value": True}


def test_llm_output_is_checked_against_the_schema() -> None:
    schema = {"type": "object", "required": ["scenes"], "properties": {"scenes": {"type": "array"}}}
    assert llm_output(_chat('{"scenes": []}'), extract=True, schema=schema)["scenes"] == []
    with pytest.raises(OutputError, match=r"response_schema: \$.scenes is required"):
        llm_output(_chat('{"other": 1}'), extract=True, schema=schema)


def test_media_output_is_the_first_file_and_lists_all_when_several() -> None:
    one = {"id": "file_1", "url": "http://h/1", "content_type": "image/png", "bytes": 3}
    two = {"id": "file_2", "url": "http://h/2", "content_type": "image/webp"}
    assert media_output([one]) == {"file_id": "file_1", "url": "http://h/1", "content_type": "image/png"}
    assert media_output([one, two]) == {
        "file_id": "file_1",
        "url": "http://h/1",
        "content_type": "image/png",
        "files": [
            {"file_id": "file_1", "url": "http://h/1", "content_type": "image/png"},
            {"file_id": "file_2", "url": "http://h/2", "content_type": "image/webp"},
        ],
    }
    with pytest.raises(OutputError, match="no file"):
        media_output([])


def test_job_output_picks_the_shape_by_the_endpoints_service() -> None:
    files = [{"id": "file_9", "url": "u", "content_type": "audio/wav"}]
    assert job_output(
        BY_NAME["completions"], {"choices": [{"text": "t"}]}, files, extract=False, schema=None
    ) == {"text": "t"}
    embedding = {"data": [{"embedding": [0.5, 0.25]}, {"embedding": [1.0]}]}
    assert job_output(BY_NAME["embeddings"], embedding, files, extract=False, schema=None) == {
        "embedding": [0.5, 0.25]
    }
    assert job_output(BY_NAME["audio.speech"], None, files, extract=False, schema=None)["file_id"] == "file_9"


@pytest.mark.parametrize("result", [None, {}, {"data": []}, {"data": ["x"]}])
def test_an_embeddings_answer_without_data_is_an_output_error(result: Any) -> None:
    with pytest.raises(OutputError, match="no data"):
        job_output(BY_NAME["embeddings"], result, [], extract=False, schema=None)


# --------------------------------------------------------------------------- the schema subset


def test_schema_subset() -> None:
    schema = {
        "type": "object",
        "required": ["a"],
        "additionalProperties": False,
        "properties": {"a": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}},
    }
    assert schema_problems({"a": [1]}, schema) == []
    assert schema_problems({"a": []}, schema) == ["$.a should hold at least 1 items"]
    assert schema_problems({"a": [1, 2, 3]}, schema) == ["$.a should hold at most 2 items"]
    assert schema_problems({"a": [True]}, schema) == ["$.a[0] should be integer"]
    assert schema_problems({"a": [1], "b": 2}, schema) == ["$.b is not allowed"]
    assert schema_problems({}, schema) == ["$.a is required"]
    assert schema_problems([], schema) == ["$ should be object"]


@pytest.mark.parametrize(
    ("value", "schema", "problems"),
    [
        (1.5, {"type": "number"}, []),
        (1, {"type": "number"}, []),
        (False, {"type": "number"}, ["$ should be number"]),
        (None, {"type": ["string", "null"]}, []),
        (3, {"type": ["string", "null"]}, ["$ should be string or null"]),
        ("b", {"enum": ["a", "c"]}, ["$ should be one of ['a', 'c']"]),
        (
            {"x": {"y": 1}},
            {"properties": {"x": {"properties": {"y": {"type": "string"}}}}},
            ["$.x.y should be string"],
        ),
        ({"extra": 1}, {"properties": {}}, []),  # extra keys are fine unless refused
    ],
)
def test_schema_types_enums_and_nesting(value: Any, schema: dict[str, Any], problems: list[str]) -> None:
    assert schema_problems(value, schema) == problems
