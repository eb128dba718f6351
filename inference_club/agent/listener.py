"""The agent's small HTTP servers (the direct transport's listener and the metrics endpoint):
one way to bind a listening socket and one uvicorn server that leaves signals alone."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn


class AgentServer(uvicorn.Server):
    """uvicorn without its own signal handling: the agent's runner owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def bind_listening_socket(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve listen host {host!r}: {exc.strerror}") from None
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class BackgroundServer:
    """A uvicorn server on its own listening socket, run as a task of the agent's loop."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._server: AgentServer | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<BackgroundServer {self.what!r} running={self.running}>"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, config: uvicorn.Config, sock: socket.socket) -> None:
        """Serve on ``sock``; returns once the server accepts connections."""
        server = AgentServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=self.what)
        while not server.started:
            if self._task.done():
                sock.close()
                # forgotten first: a later stop() (a caller's clean-up) must not raise this again
                task, self._server, self._task = self._task, None, None
                await task  # raises the start-up error, if any
                raise RuntimeError(f"{self.what} stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting; running requests get the config's graceful-shutdown time."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server = None
            self._task = None
