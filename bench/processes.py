"""The bench's child processes (engine, hubs, agents, LiteLLM): start, wait for, stop, measure.

Each child runs in its own process group, so its CPU time can be read from ``/proc`` and
it can be stopped together with whatever it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx


class Unavailable(Exception):
    """A path cannot be measured; the message says why."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def tail(self, lines: int = 8) -> str:
        out: list[str] = []
        for path in (self.stderr, self.stdout):
            with contextlib.suppress(OSError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out[-lines:])

    def last_error_line(self) -> str:
        with contextlib.suppress(OSError):
            for line in reversed(self.stderr.read_text(errors="replace").splitlines()):
                if line.strip():
                    return line.strip()
        return f"exited with status {self.popen.returncode}"


class Processes:
    """Every child process of a run, each in its own process group, stopped together."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        stdout = self.workdir / f"{name}.out"
        stderr = self.workdir / f"{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, **loopback_env(), **(env or {})},
                cwd=self.workdir,
                start_new_session=True,
            )
        proc = Proc(name, popen, stdout, stderr)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace_s: float = 10.0) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(5)
        # Children left in the group (workers) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def loopback_env() -> dict[str, str]:
    # Nothing here may go through a proxy; all traffic is on 127.0.0.1.
    return {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, proc: Proc | None = None, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise Unavailable(f"{what}: {proc.name} exited ({proc.last_error_line()})")
        with contextlib.suppress(httpx.HTTPError):
            if await check():
                return
        await asyncio.sleep(0.1)
    raise Unavailable(f"{what}: not ready after {timeout_s:.0f} s")


async def read_first_line(proc: Proc, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = proc.stdout.read_text(errors="replace")
        if "\n" in text:
            return text.split("\n", 1)[0].strip()
        if proc.popen.poll() is not None:
            raise Unavailable(f"{proc.name} exited ({proc.last_error_line()})")
        await asyncio.sleep(0.05)
    raise Unavailable(f"{proc.name} printed nothing in {timeout_s:.0f} s")


def models_listed(
    client: httpx.AsyncClient, url: str, key: str | None, model: str
) -> Callable[[], Awaitable[bool]]:
    headers = {"authorization": f"Bearer {key}"} if key else {}

    async def check() -> bool:
        r = await client.get(url, headers=headers, timeout=2)
        return r.status_code == 200 and any(m.get("id") == model for m in r.json().get("data", []))

    return check


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"
