"""The hub's metrics counters: a usage record moves them and fills its request's facts."""

from __future__ import annotations

from prometheus_client import generate_latest

from inference_club.services.metrics import HubMetrics, RequestFacts
from inference_club.services.usage import Usage


def usage(request_id: str, **fields: object) -> Usage:
    values: dict[str, object] = {
        "request_id": request_id,
        "user_id": "usr_1",
        "key_id": "key_1",
        "provider_id": "prov_1",
        "endpoint": "chat.completions",
        "model": "m1",
        "status_code": 200,
        "latency_ms": 250.0,
    }
    values.update(fields)
    return Usage(**values)  # type: ignore[arg-type]


def test_a_usage_record_counts_the_call_and_fills_its_requests_facts() -> None:
    metrics = HubMetrics()
    facts = metrics.open_requests["req_a"] = RequestFacts(user_id="usr_1")
    metrics.observe_usage(usage("req_a", ttft_ms=40.0, prompt_tokens=7, completion_tokens=3))
    metrics.observe_usage(usage("job_1.1", status_code=502, provider_id="prov_2"))  # a job: no request
    assert (facts.model, facts.provider_id) == ("m1", "prov_1")
    assert metrics.calls.values == {("m1", "200"): 1, ("m1", "502"): 1}
    assert metrics.tokens.values == {("m1", "in"): 7, ("m1", "out"): 3}
    assert metrics.ttft.count(("m1",)) == 1 and metrics.upstream.count(("m1",)) == 2


def test_without_a_hub_only_the_counters_are_served() -> None:
    text = generate_latest(HubMetrics().registry).decode()
    assert "ic_http_requests_in_flight 0.0" in text
    assert "ic_providers_online" not in text
