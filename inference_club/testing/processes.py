"""Real ``inference-club`` processes on loopback ports: hubs, agents, the fake engine.

Shared by the end-to-end tests, the scale-out cluster and the benchmarks; each helper
returns a :class:`ProcessHandle` to stop, or to kill with SIGKILL to prove recovery.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from inference_club.testing.servers import ProcessHandle, free_port

CLI = str(Path(sys.executable).parent / "inference-club")
_KEY_LINE = re.compile(r"^(ic_[A-Za-z0-9_-]{20,})$", re.MULTILINE)


@dataclass
class HubProcess:
    handle: ProcessHandle
    url: str
    data_dir: Path
    key: str


def start_hub(
    tmp: Path,
    *,
    port: int | None = None,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
    name: str = "hub",
    timeout: float = 30,
) -> HubProcess:
    port = port or free_port()
    data_dir = data_dir or tmp / "hub-data"
    handle = ProcessHandle(
        [CLI, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        tmp / f"{name}-{port}.log",
        env={"IC_LOG_LEVEL": "warning", **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    handle.wait_http(f"{url}/healthz", timeout=timeout)
    match = _KEY_LINE.search(handle.log_text())
    return HubProcess(handle, url, data_dir, match.group(1) if match else "")


def write_agent_config(path: Path, services: list[dict[str, object]]) -> Path:
    lines: list[str] = []
    for service in services:
        lines.append("[[services]]")
        for field in ("type", "url", "engine", "max_concurrency", "discover"):
            if field in service:
                value = service[field]
                lines.append(
                    f"{field} = {str(value).lower() if isinstance(value, bool) else repr(value)}".replace(
                        "'", '"'
                    )
                )
        for model in service.get("models", []):  # type: ignore[attr-defined]
            lines.append("  [[services.models]]")
            lines.append(f'  id = "{model["id"]}"')
            if model.get("features"):
                lines.append("  features = [" + ", ".join(f'"{f}"' for f in model["features"]) + "]")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def start_agent(
    tmp: Path, hub_url: str, key: str, name: str, config: Path, *, transport: str = "direct"
) -> ProcessHandle:
    args = [CLI, "agent", "--hub", hub_url, "--key", key, "--name", name, "--config", str(config)]
    if transport == "direct":
        args += ["--direct", "--listen", f"127.0.0.1:{free_port()}"]
    return ProcessHandle(args, tmp / f"agent-{name}.log")


def start_fake_engine(tmp: Path, port: int | None = None) -> tuple[ProcessHandle, str]:
    port = port or free_port()
    handle = ProcessHandle.python(
        "-m",
        "inference_club.testing.fake_engine",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        log_path=tmp / f"engine-{port}.log",
    )
    url = f"http://127.0.0.1:{port}"
    handle.wait_http(f"{url}/v1/models", timeout=20)
    return handle, url


def wait_for_model(
    hub_url: str, key: str, model: str, timeout: float = 30.0, process: ProcessHandle | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = httpx.get(
                f"{hub_url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=2
            ).json()
            if any(m["id"] == model for m in data.get("data", [])):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    detail = f"\nagent log:\n{process.log_tail()}" if process else ""
    raise TimeoutError(f"model {model!r} never appeared on {hub_url}{detail}")
