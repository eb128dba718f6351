"""The direct transport: an HTTP server the hub calls at the agent's ``callback_url``.

Contract (also in ``docs/agent-protocol.md``):

- ``{METHOD} {callback_url}/relay/{service_type}/v1/{path}[?query]`` with headers
  ``x-ic-agent-secret`` (the secret from the hub's last heartbeat answer),
  ``x-ic-model`` (the model id the hub parsed from the request), ``x-request-id`` and
  the client's ``content-type``; the body is the client's, streamed unchanged.
- A wrong or missing secret answers 401 ``{"detail": ...}``; ``GET /healthz`` answers
  200 without a secret; any other path answers 404 ``{"detail": "Not Found"}``.
- The answer is the relay's status, headers and body, streamed.
- When the hub goes away mid-request the engine request is aborted at once, even
  while the engine is silent: ``receive`` is watched for ``http.disconnect``
  concurrently with the relay, not only when the next chunk is sent.

The app is plain ASGI (no framework) because it needs to own ``receive``: the same
message stream carries the request body and the disconnect notice.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import orjson
import uvicorn

from ..http_server import BODY, HttpProtocol
from ..waiting import OwnerWatch
from .listener import BackgroundServer, bind_listening_socket
from .relay import Relay, RelayStreamError, agent_error_response

__all__ = [
    "MODEL_HEADER",
    "SECRET_HEADER",
    "DirectApp",
    "DirectServer",
    "SecretBox",
    "format_http_url",
]

log = logging.getLogger("inference_club.agent.direct")

SECRET_HEADER = "x-ic-agent-secret"
MODEL_HEADER = "x-ic-model"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_BODY_QUEUE_CHUNKS = 16


class SecretBox:
    """The current per-provider secret the hub must present (it may rotate it)."""

    def __init__(self, secret: str | None = None) -> None:
        self._secret: bytes | None = secret.encode() if secret else None

    def __repr__(self) -> str:
        return f"<SecretBox set={self._secret is not None}>"

    @property
    def is_set(self) -> bool:
        return self._secret is not None

    def set(self, secret: str | None) -> None:
        """Accept ``secret`` from now on (``None`` or empty keeps the current one)."""
        if secret:
            self._secret = secret.encode()

    def check(self, presented: bytes | None) -> bool:
        """Constant-time comparison with the current secret."""
        if self._secret is None or presented is None:
            return False
        return hmac.compare_digest(presented, self._secret)


class DirectApp:
    """The ASGI application of the direct transport."""

    def __init__(self, relay: Relay, secrets: SecretBox) -> None:
        self.relay = relay
        self.secrets = secrets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path in ("/healthz", "/healthz/"):
            await _send_json(send, 200, {"status": "ok"})
            return
        if not path.startswith("/relay/"):
            await _send_json(send, 404, {"detail": "Not Found"})
            return
        headers = _headers(scope)
        if not self.secrets.check(_raw_header(scope, SECRET_HEADER)):
            detail = (
                "invalid or missing x-ic-agent-secret"
                if self.secrets.is_set
                else "this agent has no secret from the hub yet (no heartbeat answered)"
            )
            await _send_json(send, 401, {"detail": detail})
            return
        target = _relay_target(scope)
        if target is None:
            await _send_relay_error(send, 404, "invalid_request", "expected /relay/{service_type}/v1/{path}")
            return
        service_type, hub_path = target
        model = headers.get(MODEL_HEADER, "")
        if not model:
            await _send_relay_error(send, 400, "invalid_request", f"missing the {MODEL_HEADER} header")
            return
        await self._relay(scope, receive, send, service_type, model, hub_path, headers)

    async def _relay(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service_type: str,
        model: str,
        hub_path: str,
        headers: dict[str, str],
    ) -> None:
        request_id = headers.get("x-request-id", "-")
        watch: _HubWatch | None = None
        response_started = False
        try:
            first = await receive()
            if first["type"] != "http.request":
                return  # the hub left before its body came
            chunk: bytes = first.get("body", b"")
            body: bytes | AsyncIterator[bytes] = chunk
            queue: asyncio.Queue[bytes | None] | None = None
            if first.get("more_body", False):  # the rest follows: streamed to the engine as it comes
                queue = asyncio.Queue(maxsize=_BODY_QUEUE_CHUNKS)
                if chunk:
                    queue.put_nowait(chunk)
                body = _queued(queue)
            watch = _HubWatch(receive, queue)
            response = await self.relay.open(
                service_type=service_type,
                model=model,
                method=scope["method"],
                path=hub_path,
                headers=headers,
                body=body,
            )
            async with response:
                await response.read_lead()
                response_started = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers],
                    }
                )
                # The parts straight to the connection where the server offers it (http_server.BODY).
                hook = scope.get("extensions", {}).get(BODY)
                send_part = hook["send_body"] if hook is not None else partial(_send_part, send)
                async for chunk in response.aiter_bytes():
                    await send_part(chunk)
                watch.finishing = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if watch is not None and watch.absorb():
                log.info(
                    "the hub went away: aborting %s %s (request_id=%s)", scope["method"], hub_path, request_id
                )
                return
            # Else only the server cancels this task: shutdown ran out of grace. The
            # engine request is aborted; end here rather than bubble up as an app crash.
            log.warning(
                "shutting down: aborting %s %s (request_id=%s)", scope["method"], hub_path, request_id
            )
            if not response_started:
                await _send_relay_error(
                    send, 502, "upstream_error", "the agent is shutting down; try another provider"
                )
        except RelayStreamError as exc:
            # Status and headers are out: end without completing the response so the
            # hub sees a truncated answer, not a complete one.
            log.warning("%s (request_id=%s)", exc, request_id)
        finally:
            if watch is not None:
                watch.stop()


class _HubWatch(OwnerWatch):
    """The one reader of ``receive`` once a relay started: the rest of the body goes to
    ``queue``, and ``http.disconnect`` (the hub went away) cancels the request's task,
    which aborts the engine request even while the engine is silent."""

    def __init__(self, receive: Receive, queue: asyncio.Queue[bytes | None] | None) -> None:
        self._receive = receive
        self._queue = queue
        self.finishing = False
        """Set just before the answer completes: the disconnect notice that follows is not the hub leaving."""
        super().__init__()

    async def _until(self) -> bool:
        queue = self._queue
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
            if queue is not None and message["type"] == "http.request":
                chunk = message.get("body", b"")
                if chunk:
                    await queue.put(chunk)
                if not message.get("more_body", False):
                    await queue.put(None)
                    queue = None
        return not self.finishing


async def _queued(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (chunk := await queue.get()) is not None:
        yield chunk


class DirectServer:
    """Serves :class:`DirectApp` with uvicorn on ``host:port`` (port 0 picks a free one).

    This is the ``direct`` transport: ``callback_url`` is what the heartbeat tells the
    hub (given, or derived from the bound address).
    """

    name = "direct"

    def __init__(
        self,
        relay: Relay,
        secrets: SecretBox,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        callback_url: str | None = None,
        shutdown_grace_s: float = 30.0,
    ) -> None:
        self.app = DirectApp(relay, secrets)
        self.host = host
        self.port = port
        self._callback_url = callback_url
        self.shutdown_grace_s = shutdown_grace_s
        self._serving = BackgroundServer("the direct transport server")
        self.bound_port: int | None = None

    def __repr__(self) -> str:
        return f"<DirectServer {self.host}:{self.bound_port or self.port} running={self.running}>"

    @property
    def running(self) -> bool:
        return self._serving.running

    @property
    def callback_url(self) -> str | None:
        if self._callback_url is not None:
            return self._callback_url
        if self.bound_port is None:
            return None
        return format_http_url(self.host, self.bound_port)

    async def start(self) -> None:
        """Bind and start serving; returns once the server accepts connections."""
        sock = bind_listening_socket(self.host, self.port)
        self.bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            ws="none",
            http=HttpProtocol,
            proxy_headers=False,  # the hub calls it directly: no proxy's headers to believe
            # longer than the hub's client keeps idle connections, so the hub closes
            # first and never sends a request on a connection being closed here
            timeout_keep_alive=75,
            timeout_graceful_shutdown=math.ceil(max(self.shutdown_grace_s, 0.0)),
        )
        await self._serving.start(config, sock)
        log.info("direct transport listening on %s:%d", self.host, self.bound_port)

    async def stop(self) -> None:
        """Stop accepting; let running requests finish up to ``shutdown_grace_s``."""
        await self._serving.stop()


def format_http_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


# --------------------------------------------------------------------------- ASGI helpers


def _raw_header(scope: Scope, name: str) -> bytes | None:
    key = name.encode()
    for k, v in scope["headers"]:
        if k.lower() == key:
            return bytes(v)
    return None


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope["headers"]:
        name = k.decode("latin-1").lower()
        try:
            value = v.decode("utf-8")
        except UnicodeDecodeError:
            value = v.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _relay_target(scope: Scope) -> tuple[str, str] | None:
    """``(service_type, "/v1/...?...")`` from the undecoded request path."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else scope["path"]
    path = path.split("?", 1)[0]
    rest = path[len("/relay/") :]
    service_type, sep, tail = rest.partition("/")
    if not service_type or not sep:
        return None
    hub_path = "/" + tail
    if not (hub_path == "/v1" or hub_path.startswith("/v1/")):
        return None
    query = scope.get("query_string", b"")
    if query:
        hub_path += "?" + query.decode("latin-1")
    return service_type, hub_path


async def _send_part(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _send_json(
    send: Send, status: int, data: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps(data)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_relay_error(send: Send, status: int, error_type: str, message: str) -> None:
    response = agent_error_response(status, error_type, message)
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [(k.encode(), v.encode()) for k, v in response.headers],
        }
    )
    async for chunk in response.aiter_bytes():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
