"""The endpoint table: every row describes its body once, and validation reads that row."""

from __future__ import annotations

import pytest

from inference_club.domain.endpoints import BY_NAME, BY_PATH, ENDPOINTS, BodyKind, Endpoint
from inference_club.errors import InvalidRequest, NoProvider


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_each_row_documents_the_bodies_it_takes(endpoint: Endpoint) -> None:
    takes_json = endpoint.body in (BodyKind.JSON, BodyKind.JSON_OR_MULTIPART)
    takes_multipart = endpoint.body in (BodyKind.MULTIPART, BodyKind.JSON_OR_MULTIPART)
    assert (endpoint.json_fields is not None) == takes_json
    assert (endpoint.multipart_fields is not None) == takes_multipart
    if not takes_multipart:
        assert endpoint.uploads.required == () and endpoint.uploads.accepted == ()
    for fields in (endpoint.json_fields, endpoint.multipart_fields):
        if fields is not None:
            assert set(fields.required) - {"model"} <= set(fields.properties)
    assert endpoint.model_optional == (endpoint.required_feature is not None)
    assert BY_NAME[endpoint.name] is endpoint and BY_PATH[endpoint.path] is endpoint


def test_validate_runs_the_common_checks_then_the_rows_own() -> None:
    chat = BY_NAME["chat.completions"]
    assert chat.validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]}) == "m"
    with pytest.raises(InvalidRequest, match="'model' is required") as missing:
        chat.validate({"messages": [{"role": "user"}]})
    assert missing.value.param == "model"
    with pytest.raises(InvalidRequest, match="'stream' must be a boolean"):
        chat.validate({"model": "m", "messages": [{"role": "user"}], "stream": "yes"})
    with pytest.raises(InvalidRequest) as empty:
        chat.validate({"model": "m", "messages": []})
    assert empty.value.param == "messages"
    with pytest.raises(InvalidRequest) as fmt:
        BY_NAME["audio.transcriptions"].validate({"model": "w", "response_format": "mp3"})
    assert fmt.value.param == "response_format"


def test_a_model_optional_row_asks_the_hub_for_a_model() -> None:
    voice = BY_NAME["voice.generations"]
    assert voice.validate({"input": "[S1] hello"}, default_model=lambda: "dia") == "dia"
    with pytest.raises(NoProvider):
        voice.validate({"input": "[S1] hello"}, default_model=lambda: None)
    # Without a way to choose, the model is required like anywhere else.
    with pytest.raises(InvalidRequest, match="'model' is required"):
        voice.validate({"input": "[S1] hello"})
    with pytest.raises(InvalidRequest, match="'model' is required"):
        BY_NAME["embeddings"].validate({"input": "x"}, default_model=lambda: "e")


def test_uploads_name_alternatives_and_content_types() -> None:
    edits = BY_NAME["images.edits"].uploads
    assert edits.required == (("image", "image[]"),)
    assert "image/" in edits.accepted
    assert BY_NAME["voice.generations"].uploads.required == ()
