from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from inference_club.agent.discovery import Catalog
from inference_club.agent.health import collect_health, memory_info, parse_nvidia_smi

from .stubs import make_config

SMI_OUTPUT = """0, NVIDIA GeForce RTX 4090, 24564, 9120, 15444, 37, 61
1, NVIDIA RTX A4000, 16376, [N/A], 16000, 0, 40
"""


def test_parse_nvidia_smi() -> None:
    gpus = parse_nvidia_smi(SMI_OUTPUT)
    assert gpus[0] == {
        "index": 0,
        "name": "NVIDIA GeForce RTX 4090",
        "memory_total_mib": 24564,
        "memory_used_mib": 9120,
        "memory_free_mib": 15444,
        "utilization_pct": 37,
        "temperature_c": 61,
    }
    assert gpus[1]["memory_used_mib"] is None


def test_memory_info(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree: 1000 kB\nMemAvailable: 8000000 kB\n")
    assert memory_info(meminfo) == {"total_bytes": 16000000 * 1024, "available_bytes": 8192000000}
    assert memory_info(tmp_path / "missing") is None


async def test_gpus_come_from_nvidia_smi_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config([{"type": "llm", "url": "http://127.0.0.1:9/v1"}])
    catalog = Catalog(config.services)
    monkeypatch.setenv("PATH", str(tmp_path))
    without = await collect_health(catalog)
    assert "gpus" not in without

    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{SMI_OUTPUT}EOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    health = await collect_health(catalog)
    assert [g["name"] for g in health["gpus"]] == ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A4000"]
    assert health["services"] == [
        {
            "index": 0,
            "type": "llm",
            "engine": "openai",
            "reachable": None,
            "busy": False,
            "last_error": None,
            "in_flight": 0,
            "max_concurrency": 4,
        }
    ]
