"""Stubs for the agent's tests: a scriptable local engine and a fake hub (raw ASGI)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import MutableMapping
from typing import Any

from inference_club.agent.config import AgentConfig, build_config

Scope = MutableMapping[str, Any]


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += bytes(message.get("body", b""))
        if not message.get("more_body", False):
            return body


async def _send_json(send: Any, status: int, data: Any, headers: list[Any] | None = None) -> None:
    raw = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class EngineStub:
    """A raw-ASGI local server whose behaviour each test scripts.

    Routes (any method): ``/v1/models``, ``/api/tags`` (when ``ollama``), ``/v1/stream``
    (chunk, wait for ``release``, chunk), ``/v1/hang`` (never answers), ``/v1/stall``
    (one chunk, then silence), ``/v1/break`` (one chunk, then a dropped connection),
    ``/v1/bad`` (400), ``/v1/slow`` (answers after 3 s unless
    the caller leaves first), and
    anything else echoes what arrived.
    """

    def __init__(self, models: list[str] | None = None, *, ollama: bool = False) -> None:
        self.models = list(models if models is not None else ["m1"])
        self.ollama = ollama
        self.tags = list(self.models)
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.got_request = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.disconnected_at: float | None = None
        self.models_status = 200

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        body = await _read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        record = {
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode(),
            "headers": headers,
            "body": body,
        }
        self.requests.append(record)
        if path == "/v1/models":
            if self.models_status != 200:
                await _send_json(send, self.models_status, {"error": "nope"})
                return
            data = [{"id": m, "object": "model"} for m in self.models]
            await _send_json(send, 200, {"object": "list", "data": data})
        elif path == "/api/tags" and self.ollama:
            await _send_json(send, 200, {"models": [{"name": m, "model": m} for m in self.tags]})
        elif path == "/v1/stream":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        elif path == "/v1/hang":
            self.got_request.set()
            await self._wait_disconnect(receive)
        elif path == "/v1/stall":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            self.got_request.set()
            await self._wait_disconnect(receive)
        elif path == "/v1/break":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            raise RuntimeError("engine crashed mid-stream (on purpose)")
        elif path == "/v1/bad":
            await _send_json(
                send,
                400,
                {"error": {"message": "temperature too high", "type": "invalid_request_error"}},
                [(b"x-engine", b"yes")],
            )
        elif path == "/v1/slow":
            try:
                async with asyncio.timeout(3):
                    await self._wait_disconnect(receive)
            except TimeoutError:
                await _send_json(send, 200, {"late": True})
        else:
            await _send_json(
                send,
                200,
                {
                    "method": scope["method"],
                    "path": path,
                    "query": record["query"],
                    "headers": headers,
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                },
            )

    async def _wait_disconnect(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected_at = time.monotonic()
        self.disconnected.set()


class FakeHub:
    """Records heartbeats; answers them as the hub does (or fails as scripted)."""

    def __init__(self) -> None:
        self.beats: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.times: list[float] = []
        self.fail_statuses: list[int] = []  # popped one per beat before succeeding
        self.secret = "s3cret-1"
        self.interval_s = 30
        self.beat_event = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = await _read_body(receive)
        if scope["path"] != "/api/inference/agent/heartbeat/":
            await _send_json(send, 404, {"detail": "Not Found"})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.auth.append(headers.get("authorization", ""))
        self.times.append(time.monotonic())
        self.beat_event.set()
        if self.fail_statuses:
            status = self.fail_statuses.pop(0)
            await _send_json(send, status, {"detail": f"failing with {status}"})
            return
        self.beats.append(json.loads(body))
        await _send_json(
            send,
            200,
            {
                "provider_id": "prov_1",
                "online": True,
                "interval_s": self.interval_s,
                "online_window_s": 60,
                "agent_secret": self.secret,
            },
        )

    async def wait_beats(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.beats) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} heartbeats, got {len(self.beats)}")
            await asyncio.sleep(0.01)


def make_config(services: list[dict[str, Any]], **top: Any) -> AgentConfig:
    data: dict[str, Any] = {
        "hub": "http://127.0.0.1:1",
        "key": "ic-key",
        "name": "rig",
        "transport": "direct",
        "listen": "127.0.0.1:0",
        **top,
        "services": services,
    }
    return build_config(data)
