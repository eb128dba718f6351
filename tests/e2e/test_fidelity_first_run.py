"""First run as a new user: the hub stops cleanly, the agent reads its key from a file."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from inference_club.testing.servers import ProcessHandle
from tests.e2e.conftest import CLI, start_fake_engine, start_hub, wait_for_model, write_agent_config

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_hub_exits_zero(
    tmp_path: Path, processes: list[ProcessHandle], sig: signal.Signals
) -> None:
    hub = start_hub(tmp_path)
    processes.append(hub.handle)
    os.kill(hub.handle.pid, sig)  # what `make run` passes on when it is stopped
    assert hub.handle.wait(15) == 0, hub.handle.log_tail()
    assert "Traceback" not in hub.handle.log_text()


@pytest.mark.parametrize(
    ("sig", "whole_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "kill-make"]
)
def test_make_run_stops_without_a_make_error(tmp_path: Path, sig: signal.Signals, whole_group: bool) -> None:
    """`make run` itself: Ctrl-C in its terminal (SIGINT to the whole process group) or
    `kill` of make (SIGTERM, which make passes on) prints no `make: *** ... Terminated`."""
    repo = Path(__file__).resolve().parents[2]
    venv = Path(CLI).parent.parent
    make = subprocess.Popen(
        # -o install: never reinstall into the test's interpreter, only run the recipe.
        [
            "make",
            "--no-print-directory",
            "-o",
            "install",
            "run",
            f"VENV={venv}",
            "PORT=0",
            f"DATA_DIR={tmp_path / 'data'}",
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert make.stdout is not None
        for line in make.stdout:
            if "Application startup complete" in line:
                break
        if whole_group:
            os.killpg(make.pid, sig)
        else:
            os.kill(make.pid, sig)
        output = make.communicate(timeout=30)[0]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    assert "make: ***" not in output, output
    assert "Terminated" not in output and "Traceback" not in output, output
    assert "inference-club stopped" in output


def test_agent_reads_its_key_from_a_file(tmp_path: Path, processes: list[ProcessHandle]) -> None:
    hub = start_hub(tmp_path)
    processes.append(hub.handle)
    engine, engine_url = start_fake_engine(tmp_path)
    processes.append(engine)
    config = write_agent_config(
        tmp_path / "agent.toml",
        [{"type": "llm", "url": f"{engine_url}/v1", "discover": False, "models": [{"id": "fake-chat"}]}],
    )
    key_file = tmp_path / "key"
    key_file.write_text(hub.key + "\n")
    agent = ProcessHandle(
        [
            CLI,
            "agent",
            "--hub",
            hub.url,
            "--key-file",
            str(key_file),
            "--name",
            "rig",
            "--config",
            str(config),
        ],
        tmp_path / "agent.log",
    )
    processes.append(agent)
    wait_for_model(hub.url, hub.key, "fake-chat", process=agent)
    with open(f"/proc/{agent.pid}/cmdline", "rb") as cmdline:
        assert hub.key.encode() not in cmdline.read()
    answer = httpx.post(
        f"{hub.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {hub.key}"},
        json={"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]},
        timeout=20,
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(("content", "needle"), [(None, "cannot read"), ("\n\n", "empty")])
def test_a_bad_key_file_is_a_clear_error(tmp_path: Path, content: str | None, needle: str) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    result = subprocess.run(
        [
            CLI,
            "agent",
            "--hub",
            "http://127.0.0.1:9",
            "--key-file",
            str(key_file),
            "--service",
            "llm=http://127.0.0.1:9/v1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--key-file" in result.stderr and needle in result.stderr and "Traceback" not in result.stderr
