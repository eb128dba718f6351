"""Choosing a service's adapter (``adapter_for``) and refusing configurations it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_club.agent.adapters import (
    NATIVE_ADAPTERS,
    PASS_THROUGH_ENGINES,
    Adapter,
    AdapterConfigError,
    adapter_for,
)
from inference_club.agent.adapters.a1111 import A1111Adapter

from .rig import service


def test_adapter_selection_and_config_errors(tmp_path: Path) -> None:
    assert adapter_for(service(engine="openai")) is None
    assert isinstance(adapter_for(service(engine="a1111")), A1111Adapter)
    with pytest.raises(AdapterConfigError, match="unknown engine 'comfy'"):
        adapter_for(service(engine="comfy"))
    with pytest.raises(AdapterConfigError, match="serves type music"):
        adapter_for(service(engine="acestep", type="image"))
    with pytest.raises(AdapterConfigError, match="needs workflows"):
        adapter_for(service(engine="comfyui"))
    with pytest.raises(AdapterConfigError, match="is not a folder"):
        adapter_for(service(engine="comfyui", workflows=str(tmp_path / "nope")))


@pytest.mark.parametrize("engine", PASS_THROUGH_ENGINES)
def test_openai_compatible_engines_need_no_adapter(engine: str) -> None:
    assert adapter_for(service(engine=engine, type="llm")) is None


@pytest.mark.parametrize(("engine", "cls"), sorted(NATIVE_ADAPTERS.items()))
def test_each_native_engine_gets_its_adapter_for_each_type_it_serves(
    engine: str, cls: type[Adapter], tmp_path: Path
) -> None:
    for service_type in cls.service_types:
        adapter = adapter_for(service(engine=engine, type=service_type, workflows=str(tmp_path)))
        assert type(adapter) is cls and adapter.name == engine
        assert adapter.service.type == service_type and adapter.routes


def test_the_errors_name_what_would_work(tmp_path: Path) -> None:
    with pytest.raises(AdapterConfigError) as unknown:
        adapter_for(service(engine="stablediffusion"))
    assert str(unknown.value).endswith(
        "(known: openai, ollama, llamacpp, vllm, lmstudio, comfyui, a1111, acestep, whispercpp, dia, hunyuan3d, trellis)"
    )
    with pytest.raises(AdapterConfigError, match="the comfyui engine serves type image or video, not 'tts'"):
        adapter_for(service(engine="comfyui", type="tts", workflows=str(tmp_path)))
