"""The agent's metrics: how a relayed request's end is counted, and who may scrape."""

from __future__ import annotations

import httpx
from prometheus_client import generate_latest

from inference_club.agent.config import ServiceConfig
from inference_club.agent.discovery import Catalog
from inference_club.agent.metrics import AgentMetrics, MetricsServer, RelayOutcome


def metrics() -> AgentMetrics:
    return AgentMetrics(Catalog((ServiceConfig(type="llm", url="http://127.0.0.1:1/v1"),)))


def test_each_end_of_a_relayed_request_is_counted_once() -> None:
    counted = metrics()
    counted.observe(RelayOutcome("llm#0", 200, 0.2, agent_error=False, aborted=False))
    counted.observe(RelayOutcome("llm#0", 503, 0.1, agent_error=False, aborted=False))
    counted.observe(RelayOutcome("llm#0", 502, 0.0, agent_error=True, aborted=False))
    counted.observe(RelayOutcome("llm#0", 200, 1.0, agent_error=False, aborted=True))
    counted.observe(RelayOutcome("llm#0", 404, 0.0, agent_error=False, aborted=False))
    assert counted.relayed.get(("llm#0", "200")) == 2
    assert counted.engine_time.count(("llm#0",)) == 5
    assert counted.errors.values == {("llm#0", "engine"): 1, ("llm#0", "agent"): 1, ("llm#0", "aborted"): 1}
    text = generate_latest(counted.registry).decode()
    assert 'ic_agent_requests_in_flight{engine="openai",service="llm#0"} 0.0' in text
    assert "ic_agent_tunnel_connected" not in text  # the direct transport has no tunnel


async def test_the_metrics_server_wants_its_token() -> None:
    server = MetricsServer(metrics(), "the-token", host="127.0.0.1", port=0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.bound_port}", timeout=10) as http:
            assert (await http.get("/metrics")).status_code == 401
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer the-token-not"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
            assert (
                await http.get("/other", headers={"Authorization": "Bearer the-token"})
            ).status_code == 404
            right = await http.get("/metrics", headers={"Authorization": "Bearer the-token"})
            assert right.status_code == 200 and right.headers["content-type"].startswith("text/plain")
            assert "ic_agent_relayed_requests_total" in right.text
    finally:
        await server.stop()
