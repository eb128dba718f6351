"""One observer per request: its id in and out, its metrics, and one log line without secrets."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference_club.http_server import BODY_BYTES
from inference_club.services.metrics import HubMetrics, RequestFacts
from inference_club.surfaces.http.observe import RequestObserver

KEY = "ic_sk_a-secret-key-that-must-never-be-logged"
PROMPT = "a prompt that must never be logged"


async def call(request: Request) -> Response:
    body = await request.body()
    state = request.scope["state"]
    facts: RequestFacts = state["facts"]
    facts.user_id, facts.model, facts.provider_id = "user_7", "model-x", "prov_3"
    return JSONResponse({"request_id": state["request_id"], "echo": len(body)}, status_code=201)


async def crash(_request: Request) -> Response:
    raise RuntimeError("boom")


@pytest.fixture
def metrics() -> HubMetrics:
    return HubMetrics(refresh_s=0.0)


@pytest.fixture
async def http(metrics: HubMetrics) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Route("/v1/items/{item_id}", call, methods=["POST"]), Route("/crash", crash)])
    transport = httpx.ASGITransport(app=RequestObserver(app, metrics=metrics), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == "inference_club.access"]  # type: ignore[attr-defined]


async def test_a_sane_client_request_id_is_kept_and_returned(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/items/1", headers={"x-request-id": "trace-01:a.b_c"})
    assert answer.headers["x-request-id"] == "trace-01:a.b_c"
    assert answer.json()["request_id"] == "trace-01:a.b_c"


@pytest.mark.parametrize("incoming", [b"", b"has space", b"x" * 129, b"semi;colon", "ünï".encode()])
async def test_an_absent_or_unsafe_request_id_is_replaced_by_a_new_one(
    http: httpx.AsyncClient, incoming: bytes
) -> None:
    headers = {b"x-request-id": incoming} if incoming else {}
    answer = await http.post("/v1/items/1", headers=headers)
    new_id = answer.headers["x-request-id"]
    assert re.fullmatch(r"req_[0-9a-f]{24}", new_id)
    assert answer.json()["request_id"] == new_id


async def test_one_log_line_per_request_with_its_facts_and_never_the_key_prompt_or_query(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inference_club.access")
    body = f'{{"messages": [{{"content": "{PROMPT}"}}]}}'.encode()
    answer = await http.post(
        f"/v1/items/42?api_key={KEY}",
        content=body,
        headers={"authorization": f"Bearer {KEY}", "x-request-id": "line-1"},
    )
    [line] = lines(caplog)
    assert line["request_id"] == "line-1" and line["method"] == "POST"
    assert line["path"] == "/v1/items/42" and line["status"] == 201
    assert (line["user"], line["model"], line["provider"]) == ("user_7", "model-x", "prov_3")
    assert line["bytes_out"] == len(answer.content) and line["ms"] >= 0
    assert line["bytes_in"] == 0  # counted by the body limit, which is not in front of this app
    text = repr([r.__dict__ for r in caplog.records])
    assert KEY not in text and PROMPT not in text


async def test_bytes_sent_past_the_middleware_are_counted_from_the_last_body_message(
    metrics: HubMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        # 7 more bytes went out through the server's send_body, unseen here
        await send({"type": "http.response.body", "body": b"", "more_body": False, BODY_BYTES: 7})

    caplog.set_level(logging.INFO, logger="inference_club.access")
    transport = httpx.ASGITransport(app=RequestObserver(app, metrics=metrics))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/stream")
    [line] = lines(caplog)
    assert line["bytes_out"] == 12
    assert metrics.response_bytes.get(()) == 12


async def test_metrics_count_the_route_template_and_status_and_in_flight_returns_to_zero(
    http: httpx.AsyncClient, metrics: HubMetrics
) -> None:
    for item in ("1", "2"):
        await http.post(f"/v1/items/{item}", content=b"abc")
    assert metrics.requests.get(("/v1/items/{item_id}", "POST", "model-x", "201")) == 2
    assert metrics.response_bytes.get(()) > 0
    assert metrics.in_flight == 0 and metrics.open_requests == {}


async def test_an_unmatched_path_and_a_crash_are_recorded_with_their_status(
    http: httpx.AsyncClient, metrics: HubMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inference_club.access")
    assert (await http.get("/nowhere")).status_code == 404
    assert (await http.get("/crash")).status_code == 500
    assert metrics.requests.get(("unmatched", "GET", "", "404")) == 1
    assert metrics.requests.get(("/crash", "GET", "", "500")) == 1
    assert [line["status"] for line in lines(caplog)] == [404, 500]
    assert metrics.in_flight == 0 and metrics.open_requests == {}


async def test_no_log_line_below_info_but_metrics_still_count(
    http: httpx.AsyncClient, metrics: HubMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inference_club.access")
    await http.post("/v1/items/1")
    assert lines(caplog) == []
    assert metrics.requests.get(("/v1/items/{item_id}", "POST", "model-x", "201")) == 1
