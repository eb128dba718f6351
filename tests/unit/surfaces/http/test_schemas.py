"""The documented inference bodies and answers follow each endpoint's row of the table."""

from __future__ import annotations

import pytest

from inference_club.domain.endpoints import ENDPOINTS, AnswerKind, BodyKind, Endpoint
from inference_club.errors import InvalidRequest
from inference_club.surfaces.http.schemas import (
    error_responses,
    json_body_schema,
    request_body_doc,
    response_doc,
)

NAMES = [e.name for e in ENDPOINTS]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=NAMES)
def test_the_json_body_documents_model_its_fields_and_async_only_where_it_queues(endpoint: Endpoint) -> None:
    schema = json_body_schema(endpoint)
    if endpoint.json_fields is None:
        assert schema is None
        return
    assert schema is not None
    assert schema["required"] == list(endpoint.json_fields.required)
    assert "model" in schema["properties"]
    assert set(endpoint.json_fields.properties) <= set(schema["properties"])
    assert ("async" in schema["properties"]) is endpoint.async_capable
    assert schema["additionalProperties"] is True  # bodies are forwarded, extra fields included


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=NAMES)
def test_the_request_body_offers_exactly_the_content_types_the_endpoint_reads(endpoint: Endpoint) -> None:
    content = request_body_doc(endpoint)["requestBody"]["content"]
    expected = {
        BodyKind.JSON: {"application/json"},
        BodyKind.MULTIPART: {"multipart/form-data"},
        BodyKind.JSON_OR_MULTIPART: {"application/json", "multipart/form-data"},
    }[endpoint.body]
    assert set(content) == expected
    if "multipart/form-data" in content:
        assert "async" not in content["multipart/form-data"]["schema"]["properties"]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=NAMES)
def test_a_documented_required_field_is_what_validation_asks_for_first(endpoint: Endpoint) -> None:
    for fields in (endpoint.json_fields, endpoint.multipart_fields):
        if fields is None:
            continue
        with pytest.raises(InvalidRequest) as refused:
            endpoint.validate({}, default_model=lambda: "picked")
        assert refused.value.param in fields.required


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=NAMES)
def test_the_answers_follow_the_answer_kind_and_202_only_where_it_queues(endpoint: Endpoint) -> None:
    docs = response_doc(endpoint)
    ok = set(docs[200]["content"])
    if endpoint.answer is AnswerKind.MEDIA_BYTES:
        assert ok == {"application/octet-stream"}
    elif endpoint.answer is AnswerKind.STREAM:
        assert ok == {"application/json", "text/event-stream"}
    else:
        assert ok == {"application/json"}
    assert (202 in docs) is endpoint.async_capable
    assert {400, 401, 404, 413, 415, 429, 502, 503, 504} <= set(docs)


def test_error_responses_carry_detail_only_for_the_statuses_that_send_it() -> None:
    docs = error_responses(400, 401, 404, 405, 409, 429)
    for status in (400, 401, 404, 405):
        assert "detail" in docs[status]["content"]["application/json"]["schema"]["properties"]
    for status in (409, 429):
        assert "detail" not in docs[status]["content"]["application/json"]["schema"]["properties"]
