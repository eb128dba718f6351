"""An engine's health as its owner sees it: read from the heartbeat, only well-typed facts."""

from __future__ import annotations

from typing import Any

from inference_club.domain.engine_health import service_health
from inference_club.domain.heartbeat import ModelDecl, ServiceDecl
from inference_club.domain.providers import ProviderState, ServiceInfo
from inference_club.domain.service_types import ServiceType


def provider(health: Any) -> ProviderState:
    return ProviderState(
        id="p",
        user_id="u",
        name="rig",
        transport="direct",
        callback_url=None,
        visibility="private",
        agent_secret="s",
        services=[],
        last_seen=0.0,
        created=0,
        health=health,
    )


SERVICE = ServiceInfo.from_decl(
    1, ServiceDecl(type=ServiceType.IMAGE, engine="comfyui", models=[ModelDecl(id="m")])
)


def test_the_services_report_is_found_by_index() -> None:
    health = {
        "services": [
            {"index": 0, "reachable": False, "busy": True, "last_error": "other"},
            {"index": 1, "reachable": True, "busy": False, "last_error": "x" * 500},
        ]
    }
    assert service_health(provider(health), SERVICE) == {
        "name": "comfyui",
        "reachable": True,
        "busy": False,
        "last_error": "x" * 300,
    }


def test_missing_or_mistyped_reports_are_unknown() -> None:
    unknown = {"name": "comfyui", "reachable": None, "busy": None, "last_error": None}
    assert service_health(provider({}), SERVICE) == unknown
    assert service_health(provider({"services": "nope"}), SERVICE) == unknown
    odd = {"services": [{"index": 1, "reachable": "yes", "busy": 1, "last_error": 42}]}
    assert service_health(provider(odd), SERVICE) == unknown
