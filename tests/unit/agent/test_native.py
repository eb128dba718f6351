"""Running a relayed request through a native adapter: outcomes → status, headers, body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inference_club.agent import native
from inference_club.agent.adapters.a1111 import A1111Adapter
from inference_club.agent.adapters.base import Answer, EngineCall, EngineFailed, EngineRejected
from inference_club.agent.discovery import Catalog, ServiceState
from inference_club.agent.native import PROGRESS_MIN_INTERVAL_S, _throttled, run_native

from .adapters.rig import service


class Scripted(A1111Adapter):
    """An adapter whose run raises or sleeps as told (no engine involved)."""

    outcome: Any = None
    seen: EngineCall | None = None

    async def run(self, call: EngineCall) -> Answer:
        self.seen = call
        call.report(0.5, "half")
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        if self.outcome == "sleep":
            await asyncio.sleep(30)
        return Answer.json({"ok": True})


async def _body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def scripted(outcome: Any = None, **service_values: Any) -> tuple[ServiceState, Scripted]:
    state = Catalog([service(**service_values)]).services[0]
    adapter = Scripted(state.config)
    adapter.outcome = outcome
    state.adapter = adapter
    return state, adapter


async def run(state: ServiceState, *chunks: bytes, **options: Any) -> tuple[int, dict[str, str], bytes]:
    code, headers, body = await run_native(
        state,
        method="POST",
        model=options.pop("model", "m"),
        path=options.pop("path", "/v1/images/generations"),
        headers=options.pop("headers", {"content-type": "application/json"}),
        body=_body(*chunks),
        request_id="r1",
        progress=options.pop("progress", None),
        **options,
    )
    return code, dict(headers), body


@pytest.mark.parametrize(
    ("outcome", "status", "kind", "agent_error"),
    [
        (None, 200, None, False),
        (EngineRejected("bad seed", param="seed"), 400, "invalid_request", False),
        (EngineRejected("no such file", status=404), 404, "invalid_request", False),
        (EngineFailed("CUDA error"), 502, "upstream_error", True),
        ("sleep", 504, "upstream_error", True),
    ],
)
async def test_native_outcomes_map_to_statuses(
    outcome: Any, status: int, kind: str | None, agent_error: bool
) -> None:
    catalog = Catalog([service(timeout_s=0.2)])
    state = catalog.services[0]
    adapter = Scripted(state.config)
    adapter.outcome = outcome
    state.adapter = adapter
    reports: list[tuple[str, float, str]] = []
    code, headers, body = await run_native(
        state,
        method="POST",
        model="m",
        path="/v1/images/generations",
        headers={"content-type": "application/json"},
        body=_body(b'{"prompt": "x"}'),
        request_id="job_1.1",
        progress=lambda *r: reports.append(r),
    )
    assert code == status
    assert (("x-ic-agent-error", "1") in headers) is agent_error
    if kind is not None:
        assert json.loads(body)["error"]["type"] == kind
    else:
        assert reports[-1] == ("job_1.1", 1.0, "done")
    assert reports[0] == ("job_1.1", 0.5, "half")


async def test_a_route_the_engine_does_not_serve_is_refused() -> None:
    catalog = Catalog([service()])
    code, _, body = await run_native(
        catalog.services[0],
        method="POST",
        model="m",
        path="/v1/audio/speech",
        headers={},
        body=_body(b"{}"),
        request_id="r",
        progress=None,
    )
    assert code == 404 and b"does not serve /v1/audio/speech" in body


async def test_the_adapter_gets_the_whole_request() -> None:
    state, adapter = scripted()
    code, headers, body = await run(
        state,
        b'{"prompt":',
        b' "x"}',
        path="/v1/images/generations?size=64x64&seed=",
        headers={"Content-Type": "application/json; charset=utf-8"},
        model="sd15",
    )
    call = adapter.seen
    assert call is not None
    assert (call.method, call.route, call.query) == (
        "POST",
        "/v1/images/generations",
        {"size": "64x64", "seed": ""},
    )
    assert (call.content_type, call.body, call.model, call.request_id) == (
        "application/json; charset=utf-8",
        b'{"prompt": "x"}',
        "sd15",
        "r1",
    )
    assert code == 200 and json.loads(body) == {"ok": True}
    assert headers == {"content-type": "application/json", "content-length": str(len(body))}


async def test_an_oversized_body_is_refused_as_a_client_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "MAX_REQUEST_BYTES", 10)
    state, adapter = scripted()
    code, headers, body = await run(state, b"123456", b"789012")
    assert code == 413 and "x-ic-agent-error" not in headers
    assert "larger than 10 bytes" in json.loads(body)["error"]["message"]
    assert adapter.seen is None


async def test_an_adapter_bug_is_an_upstream_error_naming_the_adapter() -> None:
    state, adapter = scripted(KeyError("images"))
    code, headers, body = await run(state, b"{}")
    error = json.loads(body)["error"]
    assert code == 502 and headers["x-ic-agent-error"] == "1" and error["type"] == "upstream_error"
    assert error["message"] == "the agent's a1111 adapter failed: KeyError('images')"
    assert adapter.last_error == "adapter error: KeyError"


async def test_the_adapter_remembers_its_last_error_until_a_success() -> None:
    state, adapter = scripted(EngineFailed("CUDA error"))
    await run(state, b"{}")
    assert adapter.last_error == "CUDA error"
    adapter.outcome = EngineRejected("bad seed")
    await run(state, b"{}")
    assert adapter.last_error is None  # the engine answered; the request was wrong
    adapter.outcome = "sleep"
    await run(state, b"{}", default_timeout_s=0.01)
    assert adapter.last_error == "timeout"
    adapter.outcome = None
    await run(state, b"{}")
    assert adapter.last_error is None


async def test_without_a_service_timeout_the_default_applies() -> None:
    state, _ = scripted("sleep")
    assert state.config.timeout_s is None
    code, _, body = await run(state, b"{}", default_timeout_s=0.01)
    assert code == 504 and "gave no result within 0.01s" in json.loads(body)["error"]["message"]


async def test_a_rejection_keeps_its_param() -> None:
    state, _ = scripted(EngineRejected("'seed' must be an integer", param="seed"))
    _, _, body = await run(state, b"{}")
    assert json.loads(body)["error"] == {
        "message": "'seed' must be an integer",
        "type": "invalid_request",
        "param": "seed",
        "code": None,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_progress_is_throttled_per_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(native, "time", clock)
    sent: list[tuple[str, float, str]] = []
    report = _throttled("r1", lambda *r: sent.append(r))
    report(0.1, "sampling")
    report(0.2, "sampling")  # too soon after the last one
    clock.now += PROGRESS_MIN_INTERVAL_S
    report(0.3, "sampling")
    report(0.3, "decoding")  # a new stage always goes
    clock.now += PROGRESS_MIN_INTERVAL_S
    report(0.3, "decoding")  # nothing new
    report(1.0, "decoding")  # the end always goes
    report(-2, "x" * 300)
    report(7, "x" * 300)
    assert sent == [
        ("r1", 0.1, "sampling"),
        ("r1", 0.3, "sampling"),
        ("r1", 0.3, "decoding"),
        ("r1", 1.0, "decoding"),
        ("r1", 0.0, "x" * 200),
        ("r1", 1.0, "x" * 200),
    ]


def test_a_failing_progress_sink_does_not_fail_the_request() -> None:
    def sink(request_id: str, value: float, stage: str) -> None:
        raise ConnectionError("hub gone")

    _throttled("r1", sink)(0.5, "half")
    _throttled("r1", None)(0.5, "half")  # no sink: nothing to do
