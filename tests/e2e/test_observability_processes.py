"""Logs and metrics of real processes: ``inference-club serve`` and ``inference-club agent`` with JSON logs.

One request id is followed from the client through the hub's log line and the agent's,
on both transports; every line the processes wrote parses as JSON and none holds the
key, the agent's metrics token or the prompt.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from inference_club.testing.servers import ProcessHandle, free_port
from tests.e2e.conftest import CLI, start_fake_engine, start_hub, wait_for_model, write_agent_config

pytestmark = pytest.mark.e2e

PROMPT = "the secret plans for the lighthouse, never to be logged"
METRICS_TOKEN = "hub-scrape-token-e2e"
AGENT_TOKEN = "agent-scrape-token-e2e"


# What `inference-club serve` prints itself (not log lines): the first start's admin key
# and invite link, and the serving / stopped notices.
_CLI_PRINTS = ("First start: ", "ic_", "Set the admin's dashboard password", "http://", "inference-club ")


def json_lines(handle: ProcessHandle) -> list[dict[str, Any]]:
    """Every log line of the process, each parsed as JSON; any other line fails."""
    lines = []
    for line in handle.log_text().splitlines():
        if not line.strip() or (not line.startswith("{") and line.startswith(_CLI_PRINTS)):
            continue
        parsed = orjson.loads(line)
        assert {"time", "level", "logger", "message"} <= parsed.keys(), line
        lines.append(parsed)
    return lines


def with_request_id(handle: ProcessHandle, logger: str, request_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in json_lines(handle)
        if line["logger"] == logger and line.get("request_id") == request_id
    ]


def wait_for_lines(
    handle: ProcessHandle, logger: str, request_id: str, timeout: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not (found := with_request_id(handle, logger, request_id)):
        assert time.monotonic() < deadline, f"no {logger} line for {request_id}:\n{handle.log_tail()}"
        time.sleep(0.1)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("transport", ["direct", "tunnel"])
def test_one_request_id_through_json_logs_of_hub_and_agent(
    tmp_path: Path, processes: list[ProcessHandle], transport: str
) -> None:
    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    hub = start_hub(
        tmp_path, env={"IC_LOG_FORMAT": "json", "IC_LOG_LEVEL": "info", "IC_METRICS_TOKEN": METRICS_TOKEN}
    )
    processes.append(hub.handle)
    assert hub.key, hub.handle.log_text()
    config = write_agent_config(
        tmp_path / "rig.toml",
        [
            {
                "type": "llm",
                "url": f"{engine_url}/v1",
                "discover": False,
                "models": [{"id": "fake-chat", "features": ["streaming"]}],
            },
        ],
    )
    metrics_port = free_port()
    args = [
        CLI,
        "agent",
        "--hub",
        hub.url,
        "--name",
        "rig",
        "--config",
        str(config),
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    ]
    if transport == "direct":
        args += ["--direct", "--listen", f"127.0.0.1:{free_port()}"]
    agent = ProcessHandle(
        args,
        tmp_path / "agent.log",
        env={"IC_AGENT_KEY": hub.key, "IC_AGENT_LOG_FORMAT": "json", "IC_AGENT_METRICS_TOKEN": AGENT_TOKEN},
    )
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-chat", process=agent)

    client = openai.OpenAI(base_url=f"{hub.url}/v1", api_key=hub.key, max_retries=0)
    request_id = f"e2e-{transport}-1"
    raw = client.chat.completions.with_raw_response.create(
        model="fake-chat",
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"x-request-id": request_id},
    )
    assert raw.headers["x-request-id"] == request_id

    hub_line = wait_for_lines(hub.handle, "inference_club.access", request_id)
    agent_line = wait_for_lines(agent, "inference_club.agent.relay", request_id)
    assert hub_line["status"] == 200 and hub_line["path"] == "/v1/chat/completions"
    assert hub_line["model"] == "fake-chat" and hub_line["provider"] and hub_line["user"]
    assert hub_line["bytes_out"] > 0 and agent_line["bytes"] > 0
    assert agent_line["status"] == 200 and agent_line["service"] == "llm#0"

    with httpx.Client(timeout=10) as http:
        anonymous = http.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert anonymous.status_code == 401
        scraped = http.get(
            f"http://127.0.0.1:{metrics_port}/metrics", headers={"Authorization": f"Bearer {AGENT_TOKEN}"}
        )
        assert scraped.status_code == 200
        assert 'ic_agent_relayed_requests_total{service="llm#0",status="200"} 1.0' in scraped.text
        assert http.get(f"{hub.url}/metrics").status_code == 401
        hub_metrics = http.get(f"{hub.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert hub_metrics.status_code == 200
        assert f'ic_providers_online{{transport="{transport}"}} 1.0' in hub_metrics.text

    for handle in (hub.handle, agent):
        lines = json_lines(handle)
        assert lines, handle.log_tail()
        for line in lines:
            text = orjson.dumps(line).decode()
            assert hub.key not in text and AGENT_TOKEN not in text and METRICS_TOKEN not in text, text
            assert PROMPT not in text, text
