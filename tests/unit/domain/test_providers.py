"""Providers as routing keeps them: services with default modalities, who is online, who may use one."""

from __future__ import annotations

import pytest

from inference_club.domain.heartbeat import ModelDecl, ServiceDecl
from inference_club.domain.providers import ProviderState, ServiceInfo, parse_heartbeat
from inference_club.domain.service_types import ServiceType
from inference_club.errors import InvalidRequest


def state(**changes: object) -> ProviderState:
    base = ProviderState(
        id="p",
        user_id="owner",
        name="rig",
        transport="direct",
        callback_url="http://rig",
        visibility="private",
        agent_secret="s",
        services=[],
        last_seen=1000.0,
        created=0,
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def test_a_services_models_get_the_types_default_modalities_unless_declared() -> None:
    decl = ServiceDecl(
        type=ServiceType.IMAGE,
        engine="comfyui",
        max_concurrency=2,
        models=[ModelDecl(id="sdxl"), ModelDecl(id="flux", input_modalities=["text"], features=["seed"])],
    )
    info = ServiceInfo.from_decl(3, decl)
    assert (info.index, info.type, info.engine, info.max_concurrency) == (3, ServiceType.IMAGE, "comfyui", 2)
    assert info.models["sdxl"].input_modalities == ("text", "image")
    assert info.models["sdxl"].output_modalities == ("image",)
    assert info.models["flux"].input_modalities == ("text",) and info.models["flux"].features == ("seed",)
    assert info.to_json()["models"][1] == {
        "id": "flux",
        "context_length": None,
        "input_modalities": ["text"],
        "output_modalities": ["image"],
        "features": ["seed"],
    }


def test_online_means_a_recent_heartbeat_or_an_open_tunnel() -> None:
    direct = state(last_seen=1000.0)
    assert direct.is_online(1030.0, 60.0) and not direct.is_online(1061.0, 60.0)
    tunnel = state(transport="tunnel", last_seen=0.0)
    assert not tunnel.is_online(1.0, 60.0)
    tunnel.tunnels = 1
    assert tunnel.is_online(10_000.0, 60.0)


@pytest.mark.parametrize(
    ("visibility", "user", "preference", "usable"),
    [
        ("private", "owner", "own", True),
        ("private", "other", "own-first", False),
        ("shared", "other", "own-first", True),
        ("shared", "other", "any", True),
        ("shared", "other", "own", False),
    ],
)
def test_who_may_use_a_provider(visibility: str, user: str, preference: str, usable: bool) -> None:
    assert state(visibility=visibility).usable_by(user, preference) is usable


def test_a_bad_heartbeat_names_the_field() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_heartbeat({"name": "rig", "services": [{"type": "hologram"}]})
    assert refused.value.param == "services.0.type"
    with pytest.raises(InvalidRequest) as no_name:
        parse_heartbeat({})
    assert no_name.value.param == "name"
