"""The health snapshot sent with every heartbeat (free-form for the hub, docs/agent-protocol.md).

Shape::

    {"load": [1m, 5m, 15m] | null, "cpu_count": int | null,
     "memory": {"total_bytes", "available_bytes"} | null,
     "gpus": [{"index", "name", "memory_total_mib", "memory_used_mib",
               "memory_free_mib", "utilization_pct", "temperature_c"}],   # only with nvidia-smi
     "in_flight": int,
     "services": [{"index", "type", "engine", "reachable", "busy", "last_error",
                   "in_flight", "max_concurrency"}]}

Service URLs are not included: on a shared hub they are nobody else's business.
``last_error`` is a short text (``"unreachable"``, ``"timeout"``, a configuration
problem or the engine's last failure), shown to the provider's owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .discovery import Catalog

__all__ = ["collect_health", "memory_info", "nvidia_gpus", "parse_nvidia_smi"]

log = logging.getLogger("inference_club.agent.health")

_GPU_FIELDS = (
    ("index", "index", int),
    ("name", "name", str),
    ("memory.total", "memory_total_mib", int),
    ("memory.used", "memory_used_mib", int),
    ("memory.free", "memory_free_mib", int),
    ("utilization.gpu", "utilization_pct", int),
    ("temperature.gpu", "temperature_c", int),
)


async def collect_health(catalog: Catalog, *, gpus: bool = True) -> dict[str, Any]:
    """A snapshot of this machine and of the agent's services."""
    load: list[float] | None = None
    with contextlib.suppress(OSError, AttributeError):
        load = [round(x, 2) for x in os.getloadavg()]
    snapshot: dict[str, Any] = {
        "load": load,
        "cpu_count": os.cpu_count(),
        "memory": memory_info(),
        "in_flight": sum(s.in_flight for s in catalog.services),
        "services": [
            {
                "index": s.index,
                "type": s.config.type,
                "engine": s.config.engine,
                "reachable": s.reachable,
                "busy": s.busy,
                "last_error": s.last_error,
                "in_flight": s.in_flight,
                "max_concurrency": s.config.max_concurrency,
            }
            for s in catalog.services
        ],
    }
    if gpus:
        found = await nvidia_gpus()
        if found is not None:
            snapshot["gpus"] = found
    return snapshot


def memory_info(meminfo: Path = Path("/proc/meminfo")) -> dict[str, int] | None:
    """Total and available memory in bytes (Linux), or None."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * 1024
    if "MemTotal" not in values:
        return None
    return {
        "total_bytes": values["MemTotal"],
        "available_bytes": values.get("MemAvailable", values.get("MemFree", 0)),
    }


async def nvidia_gpus(timeout_s: float = 5.0) -> list[dict[str, Any]] | None:
    """GPU facts from ``nvidia-smi``, or None when it is absent or fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    query = ",".join(f for f, _, _ in _GPU_FIELDS)
    try:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--query-gpu={query}",
            "--format=csv,noheader,nounits",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        log.debug("cannot run nvidia-smi: %s", exc)
        return None
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        log.debug("nvidia-smi timed out")
        return None
    if proc.returncode != 0:
        return None
    return parse_nvidia_smi(out.decode("utf-8", "replace"))


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` output."""
    gpus: list[dict[str, Any]] = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(_GPU_FIELDS):
            continue
        gpu: dict[str, Any] = {}
        for cell, (_, key, kind) in zip(cells, _GPU_FIELDS, strict=True):
            if kind is int:
                try:
                    gpu[key] = int(float(cell))
                except ValueError:
                    gpu[key] = None
            else:
                gpu[key] = cell
        gpus.append(gpu)
    return gpus
