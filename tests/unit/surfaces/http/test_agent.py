"""Agent endpoints: the heartbeat registers a provider; progress reports are checked field by field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

HEARTBEAT = "/api/inference/agent/heartbeat"
PROGRESS = "/api/inference/agent/progress"


async def test_a_tunnel_heartbeat_registers_a_provider_and_answers_its_secret_and_timing(
    api: InProcessHub,
) -> None:
    key = await api.new_key()
    body = {"name": "rig", "transport": "tunnel", "services": [{"type": "llm", "models": [{"id": "m"}]}]}
    first = await api.http.post(HEARTBEAT, json=body, headers=auth(key))
    assert first.status_code == 200
    answer = first.json()
    assert answer["online"] is True and answer["agent_secret"]
    assert answer["interval_s"] == api.hub.settings.heartbeat_interval_s
    assert answer["online_window_s"] == api.hub.settings.online_window_s
    provider = api.hub.registry.get(answer["provider_id"])
    assert provider is not None and provider.name == "rig" and provider.user_id == await api.user_id(key)
    again = await api.http.post(HEARTBEAT, json=body, headers=auth(key))
    assert again.json()["provider_id"] == answer["provider_id"]  # refreshed, not a second provider


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"transport": "tunnel"}, "name"),
        ({"name": "rig", "transport": "direct"}, "callback_url"),
        ({"name": "rig", "transport": "pigeon"}, "transport"),
    ],
)
async def test_a_bad_heartbeat_is_400_naming_the_field(
    api: InProcessHub, body: dict[str, Any], param: str
) -> None:
    key = await api.new_key()
    answer = await api.http.post(HEARTBEAT, json=body, headers=auth(key))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


async def test_a_heartbeat_needs_a_key_and_a_json_object(api: InProcessHub) -> None:
    assert (await api.http.post(HEARTBEAT, json={"name": "rig"})).status_code == 401
    key = await api.new_key()
    answer = await api.http.post(
        HEARTBEAT, content=b"[]", headers={**auth(key), "content-type": "application/json"}
    )
    assert answer.status_code == 400 and "JSON object" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"progress": 0.5}, "request_id"),
        ({"request_id": "", "progress": 0.5}, "request_id"),
        ({"request_id": "r" * 129, "progress": 0.5}, "request_id"),
        ({"request_id": 7, "progress": 0.5}, "request_id"),
        ({"request_id": "req_1"}, "progress"),
        ({"request_id": "req_1", "progress": 1.5}, "progress"),
        ({"request_id": "req_1", "progress": -0.1}, "progress"),
        ({"request_id": "req_1", "progress": True}, "progress"),
        ({"request_id": "req_1", "progress": "0.5"}, "progress"),
        ({"request_id": "req_1", "progress": 0.5, "stage": 3}, "stage"),
    ],
)
async def test_a_bad_progress_report_is_400_naming_the_field(
    api: InProcessHub, body: dict[str, Any], param: str
) -> None:
    key = await api.new_key()
    answer = await api.http.post(PROGRESS, json=body, headers=auth(key))
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


async def test_progress_of_a_request_nobody_watches_is_202_not_accepted(api: InProcessHub) -> None:
    key = await api.new_key()
    for value in (0, 1, 0.25):
        answer = await api.http.post(
            PROGRESS,
            json={"request_id": "req_unknown", "progress": value, "stage": "denoise"},
            headers=auth(key),
        )
        assert answer.status_code == 202 and answer.json() == {"accepted": False}
