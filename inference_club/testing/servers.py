"""Run ASGI apps and helper processes on real loopback sockets for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import uvicorn

_POLL_INTERVAL_S = 0.05


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_app(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout_s: float = 2.0,
    **config: Any,
) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in the running event loop; yields its base URL.

    The socket is bound here rather than by uvicorn: port 0 then yields the real port, and
    a port in use raises OSError instead of uvicorn's sys.exit. Requests still running at
    exit (hung on purpose, say) are cancelled after `shutdown_timeout_s`.
    """
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when it is
    # explicit; with proto 0 every keep-alive answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    settings: dict[str, Any] = {
        "log_level": "warning",
        "log_config": None,  # leave the test run's logging setup alone
        "lifespan": "auto",
        "timeout_graceful_shutdown": shutdown_timeout_s,
        **config,
    }
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    # serve() installs signal handlers only on the main thread and restores them on exit.
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # startup failed: surface the error
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.005)
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(shutdown_timeout_s + 3):
                await asyncio.shield(task)
        except (TimeoutError, SystemExit):
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await task
        finally:
            sock.close()


def _answers(url: str, timeout: float) -> bool:
    try:
        httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return False
    return True


def wait_http(url: str, timeout: float = 10.0, process: ProcessHandle | None = None) -> None:
    """Block until `url` answers any HTTP status; fail early if `process` exits."""
    deadline = time.monotonic() + timeout
    while not _answers(url, timeout=1.0):
        if process is not None and not process.is_running():
            raise RuntimeError(
                f"{process.describe()} exited with {process.returncode} before {url} "
                f"answered; log tail:\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            detail = f"; log tail:\n{process.log_tail()}" if process else ""
            raise TimeoutError(f"{url} did not answer within {timeout}s{detail}")
        time.sleep(_POLL_INTERVAL_S)


async def wait_http_async(url: str, timeout: float = 10.0, process: ProcessHandle | None = None) -> None:
    """wait_http for async tests: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            try:
                await client.get(url)
                return
            except httpx.HTTPError:
                pass
            if process is not None and not process.is_running():
                raise RuntimeError(
                    f"{process.describe()} exited with {process.returncode} before {url} "
                    f"answered; log tail:\n{process.log_tail()}"
                )
            if time.monotonic() > deadline:
                detail = f"; log tail:\n{process.log_tail()}" if process else ""
                raise TimeoutError(f"{url} did not answer within {timeout}s{detail}")
            await asyncio.sleep(_POLL_INTERVAL_S)


class ProcessHandle:
    """A child process in its own process group, with stdout and stderr in a log file.

    Killing the group also takes down anything the child started. Use `python()` to run
    this interpreter (the venv's), never a `python3` found on PATH: a pyenv shim would sit
    between us and the real process.
    """

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> None:
        self.args = list(args)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = self.log_path.open("ab")
        merged_env = {**os.environ, **(env or {})}
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=merged_env,
            cwd=cwd,
            start_new_session=True,  # own process group: killpg reaches grandchildren too
        )

    @classmethod
    def python(
        cls,
        *args: str,
        log_path: Path | str,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
    ) -> ProcessHandle:
        """Run `sys.executable *args`, e.g. `ProcessHandle.python("-m", "pkg", log_path=p)`."""
        return cls([sys.executable, *args], log_path, env=env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def is_running(self) -> bool:
        return self.process.poll() is None

    def describe(self) -> str:
        return f"process {self.pid} ({' '.join(self.args[:4])}...)"

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_http(self, url: str, timeout: float = 10.0) -> None:
        wait_http(url, timeout, process=self)

    async def wait_http_async(self, url: str, timeout: float = 10.0) -> None:
        await wait_http_async(url, timeout, process=self)

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group (a crash: no cleanup runs) and reap the child."""
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the group, then SIGKILL what is left after `timeout`."""
        if self.is_running():
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Grandchildren may outlive the child; the group kill reaches them either way.
        self.kill()
        self._log.close()
        return self.returncode

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
