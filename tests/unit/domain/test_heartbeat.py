"""The heartbeat model: what the agent sends is what the hub reads, and nothing it did not set."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inference_club.domain.heartbeat import HeartbeatBody, ModelDecl, ServiceDecl
from inference_club.domain.providers import parse_heartbeat
from inference_club.domain.service_types import ServiceType
from inference_club.errors import InvalidRequest


def test_the_wire_form_leaves_out_what_the_sender_did_not_set() -> None:
    body = HeartbeatBody(
        name="rig",
        transport="tunnel",
        version="1.0",
        health={"in_flight": 0},
        services=[ServiceDecl(type=ServiceType.LLM, models=[ModelDecl(id="m", context_length=4096)])],
    )
    assert body.to_wire() == {
        "name": "rig",
        "transport": "tunnel",
        "version": "1.0",
        "health": {"in_flight": 0},
        "services": [{"type": "llm", "models": [{"id": "m", "context_length": 4096}]}],
    }
    read = parse_heartbeat(body.to_wire())
    assert read == body
    (service,) = read.normalized_services()
    assert (service.engine, service.max_concurrency, service.models[0].features) == ("openai", 4, [])


def test_the_legacy_models_form_reads_as_one_llm_service() -> None:
    read = parse_heartbeat({"name": "old-rig", "models": [{"name": "llama", "context_window": 2048}]})
    (service,) = read.normalized_services()
    assert service.type is ServiceType.LLM
    assert [(m.id, m.context_length) for m in service.models] == [("llama", 2048)]


def test_the_agent_side_refuses_what_the_hub_would() -> None:
    with pytest.raises(ValidationError):
        HeartbeatBody(name="bad name with spaces")
    with pytest.raises(InvalidRequest) as refused:
        parse_heartbeat({"name": "rig", "services": [{"type": "llm", "models": [{"id": "a\nb"}]}]})
    assert refused.value.param == "services.0.models.0.id"
