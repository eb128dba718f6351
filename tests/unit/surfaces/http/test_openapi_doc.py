"""The OpenAPI document: every route, its error answers in our shapes, and no FastAPI 422."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from inference_club.domain.endpoints import ENDPOINTS
from inference_club.surfaces.app import create_app
from inference_club.surfaces.http.openapi_doc import SCHEMAS, complete
from tests.conftest import make_settings

REF = "#/components/schemas/"


def operation(**extra: Any) -> dict[str, Any]:
    return {"responses": {"200": {"description": "ok"}, "422": {"description": "unused"}}, **extra}


def document(paths: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "paths": paths,
        "components": {
            "schemas": {"HTTPValidationError": {}, "ValidationError": {}, "Mine": {"type": "object"}}
        },
    }


def ref_of(response: dict[str, Any]) -> str:
    ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return ref.removeprefix(REF)


def test_an_authenticated_templated_route_gets_400_401_404_and_bearer_security_but_no_422() -> None:
    doc = complete(document({"/v1/things/{thing_id}": {"get": operation(parameters=[{"name": "thing_id"}])}}))
    responses = doc["paths"]["/v1/things/{thing_id}"]["get"]["responses"]
    assert set(responses) == {"200", "400", "401", "404"}
    assert {ref_of(responses[s]) for s in ("400", "401", "404")} == {"ErrorWithDetail"}
    assert doc["paths"]["/v1/things/{thing_id}"]["get"]["security"] == [{"HTTPBearer": []}]


def test_a_public_route_without_inputs_gets_no_error_answers_or_security() -> None:
    doc = complete(document({"/healthz": {"get": operation()}}))
    op = doc["paths"]["/healthz"]["get"]
    assert set(op["responses"]) == {"200"} and "security" not in op


def test_bodies_add_413_state_changes_add_409_and_admin_routes_404() -> None:
    doc = complete(
        document(
            {
                "/v1/things/{thing_id}/cancel": {"post": operation(requestBody={"content": {}})},
                "/v1/admin/users": {"get": operation()},
            }
        )
    )
    cancel = doc["paths"]["/v1/things/{thing_id}/cancel"]["post"]["responses"]
    assert {"400", "401", "404", "409", "413"} <= set(cancel)
    assert ref_of(cancel["409"]) == "Error" and ref_of(cancel["413"]) == "Error"
    assert {"401", "404"} <= set(doc["paths"]["/v1/admin/users"]["get"]["responses"])


def test_an_error_answer_a_route_declared_itself_gets_the_shared_body() -> None:
    op = operation()
    op["responses"]["503"] = {"description": "busy", "content": {"text/plain": {}}}
    doc = complete(document({"/readyz": {"get": op}}))
    assert ref_of(doc["paths"]["/readyz"]["get"]["responses"]["503"]) == "Error"
    assert doc["paths"]["/readyz"]["get"]["responses"]["503"]["description"] == "busy"


def test_the_shared_schemas_replace_fastapis_validation_error_and_are_copies() -> None:
    doc = complete(document({}))
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(SCHEMAS) <= set(schemas) and "Mine" in schemas
    before = copy.deepcopy(SCHEMAS)
    schemas["Job"]["properties"]["attempts"]["type"] = "string"
    assert SCHEMAS == before


def test_a_retry_answers_202_with_the_job_and_no_200() -> None:
    doc = complete(document({"/v1/jobs/{job_id}/retry": {"post": operation()}}))
    responses = doc["paths"]["/v1/jobs/{job_id}/retry"]["post"]["responses"]
    assert "200" not in responses and ref_of(responses["202"]) == "Job"


def test_status_filters_and_last_event_id_get_the_patterns_the_handlers_check() -> None:
    doc = complete(
        document(
            {
                "/v1/jobs": {"get": operation(parameters=[{"name": "status", "in": "query", "schema": {}}])},
                "/v1/workflows/runs/{run_id}/events": {
                    "get": operation(parameters=[{"name": "last-event-id", "in": "header", "schema": {}}])
                },
            }
        )
    )
    status = doc["paths"]["/v1/jobs"]["get"]["parameters"][0]["schema"]["pattern"]
    assert re.fullmatch(status, "QUEUED,FAILED") and not re.fullmatch(status, "QUEUED,nope")
    last = doc["paths"]["/v1/workflows/runs/{run_id}/events"]["get"]["parameters"][0]["schema"]["pattern"]
    assert re.fullmatch(last, " 12 ") and not re.fullmatch(last, "x1")


# --------------------------------------------------------------------------- the app's document


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    # The document needs no hub: the app is not started.
    yield create_app(make_settings(Path(tmp_path_factory.mktemp("hub")) / "data"))


def openapi_path(route_path: str) -> str:
    return re.sub(r":\w+}", "}", route_path)  # {model_id:path} is {model_id} in the document


def api_routes(app: FastAPI) -> Iterator[APIRoute]:
    """The app's routes, looking inside included routers (FastAPI keeps those as one entry each)."""
    for route in app.routes:
        included = getattr(route, "original_router", None)
        for inner in included.routes if included is not None else [route]:
            if isinstance(inner, APIRoute):
                yield inner


def test_the_document_lists_every_route_in_the_schema_and_nothing_else(app: FastAPI) -> None:
    doc = app.openapi()
    listed = {(m, p) for p, item in doc["paths"].items() for m in item}
    routes = {
        (method.lower(), openapi_path(route.path))
        for route in api_routes(app)
        if route.include_in_schema
        for method in route.methods or ()
    }
    assert len(routes) > len(ENDPOINTS)  # the routers were looked into
    assert listed == routes
    assert not any(p.startswith(("/internal/", "/docs")) for _, p in listed)
    assert {("post", e.path) for e in ENDPOINTS} <= listed
    assert app.openapi() is doc  # built once


def test_no_operation_answers_422_and_every_reference_resolves(app: FastAPI) -> None:
    doc = app.openapi()
    text = repr(doc)
    assert "'422'" not in text
    schemas = doc["components"]["schemas"]
    for ref in re.findall(r"'\$ref': '#/components/schemas/([^']+)'", text):
        assert ref in schemas, ref


def test_every_v1_and_agent_operation_requires_the_bearer_key(app: FastAPI) -> None:
    doc = app.openapi()
    for path, item in doc["paths"].items():
        if not path.startswith(("/v1/", "/api/inference/agent/")):
            continue
        for method, op in item.items():
            assert op.get("security"), (method, path)
            assert "401" in op["responses"], (method, path)


def test_the_batch_body_offers_each_queueable_json_endpoint_without_async(app: FastAPI) -> None:
    body = app.openapi()["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    items = body["properties"]["requests"]["items"]["oneOf"]
    offered = {item["properties"]["endpoint"]["enum"][0] for item in items}
    assert offered == {e.path for e in ENDPOINTS if e.async_capable and e.json_fields is not None}
    assert all("async" not in item["properties"]["body"]["properties"] for item in items)
