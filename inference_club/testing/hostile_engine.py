"""A hostile engine: huge, endless and malformed answers and hostile response heads.

It speaks HTTP/1.1 on a raw socket, so it can send what no framework would: NUL, CR or
LF inside a header value, informational (1xx) status lines, a body that never ends. The
answers use the real wire formats: images and 3D JSON with ``b64_json``, SSE chat
chunks, raw media bytes.

It answers any path, with or without the direct transport's ``/relay/{type}`` prefix,
so it can stand behind a real agent (as an engine) or be a direct provider's
``callback_url`` itself (as a hostile agent). Big answers are sent from one precomputed
block, so sending hundreds of megabytes costs little CPU and no memory.

What to answer comes from the request's JSON body field ``hostile`` (bodies pass through
the hub unchanged), else from the server's default :class:`Attack`:

    {"answer": "images" | "mesh" | "bytes" | "sse" | "json",
     "bytes": 300000000,          # answer size; null or absent with "endless": true
     "endless": false,            # never finish the body (chunked, until the reader goes)
     "malformed": null | "base64" | "truncated" | "not-json",
     "status": 200,               # any number, 101 and other 1xx included
     "informational": [103],      # 1xx heads sent before the final one
     "headers": [["content-type", "image/png\\u0000"]]}   # sent as UTF-8, unchecked

In process: ``async with serve_hostile(attack) as (engine, url)``; as a process:
``python -m inference_club.testing.hostile_engine --port P [--attack JSON]``.

A hostile *agent* on the tunnel transport is a real agent whose relay is
:class:`HostileAgentRelay`: the tunnel frames are the real ones, but the ``RESPONSE``
head carries the attack's status and headers verbatim (CR, LF and NUL included), which no
engine could make a real agent send.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from inference_club.agent.relay import Relay, RelayResponse

__all__ = ["Attack", "HostileAgentRelay", "HostileEngine", "main", "serve_hostile"]

_BLOCK = 1024 * 1024  # bytes sent per write of a big answer (a multiple of 4 and of 3)
_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
_GLB = b"glTF\x02\x00\x00\x00" + b"\x00" * 16
_MAX_REQUEST_HEAD = 64 * 1024
_MAX_REQUEST_BODY = 16 * 1024 * 1024
_REASONS = {101: "Switching Protocols", 100: "Continue", 102: "Processing", 103: "Early Hints"}


@dataclass(frozen=True, slots=True)
class Attack:
    answer: str = "images"
    bytes: int = 1024
    endless: bool = False
    malformed: str | None = None
    status: int = 200
    informational: tuple[int, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any], base: Attack | None = None) -> Attack:
        attack = base or cls()
        changes: dict[str, Any] = {}
        for name in ("answer", "bytes", "endless", "malformed", "status"):
            if name in data:
                changes[name] = data[name]
        if data.get("bytes", 0) is None:
            changes["bytes"], changes["endless"] = 0, True
        if "informational" in data:
            changes["informational"] = tuple(int(s) for s in data["informational"])
        if "headers" in data:
            changes["headers"] = tuple((str(k), str(v)) for k, v in data["headers"])
        return replace(attack, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "bytes": self.bytes,
            "endless": self.endless,
            "malformed": self.malformed,
            "status": self.status,
            "informational": list(self.informational),
            "headers": [list(h) for h in self.headers],
        }


@dataclass(slots=True)
class HostileStats:
    requests: int = 0
    paths: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    disconnects: int = 0


# --- answers ------------------------------------------------------------------------------


def _b64_block(first: bytes) -> tuple[bytes, bytes]:
    """Base64 text blocks of _BLOCK characters: the first starts with ``first`` decoded."""
    raw = _BLOCK // 4 * 3
    head = base64.b64encode(first + bytes(raw - len(first)))
    body = base64.b64encode(bytes(range(256)) * (raw // 256) + bytes(raw % 256))
    return head, body


_IMAGE_BLOCKS = _b64_block(_PNG)
_MESH_BLOCKS = _b64_block(_GLB)
_BYTE_BLOCK = bytes(range(256)) * (_BLOCK // 256)


def _repeat(first: bytes, rest: bytes, size: int | None) -> Iterator[bytes]:
    """``first`` then ``rest`` again and again: ``size`` bytes in all (None: forever)."""
    block, sent = first, 0
    while size is None or sent < size:
        piece = block if size is None else block[: size - sent]
        yield piece
        sent += len(piece)
        block = rest


@dataclass(frozen=True, slots=True)
class _Body:
    content_type: str
    parts: Iterator[bytes]
    length: int | None  # None: chunked, until the parts end (or never)


def _media_json(blocks: tuple[bytes, bytes], attack: Attack) -> _Body:
    prefix = b'{"created": %d, "data": [{"b64_json": "' % int(time.time())
    suffix = b'", "revised_prompt": "hostile"}]}'
    if attack.malformed == "not-json":
        return _Body("application/json", iter([b"<html>this is not json</html>"]), None)
    if attack.malformed == "base64":
        return _Body("application/json", iter([prefix + b"A" + suffix]), None)
    if attack.endless:
        return _Body("application/json", _chain([prefix], _repeat(*blocks, None)), None)
    payload = max(0, attack.bytes - len(prefix) - len(suffix)) // 4 * 4
    tail = [] if attack.malformed == "truncated" else [suffix]
    length = None if attack.malformed == "truncated" else len(prefix) + payload + len(suffix)
    return _Body("application/json", _chain([prefix], _repeat(*blocks, payload), tail), length)


def _sse(attack: Attack) -> _Body:
    event = (
        b'data: {"id":"chatcmpl-hostile","object":"chat.completion.chunk","created":0,'
        b'"model":"hostile","choices":[{"index":0,"delta":{"content":"' + b"a" * 4000 + b'"}}]}\n\n'
    )
    block = event * (_BLOCK // len(event))
    size = None if attack.endless else attack.bytes
    return _Body("text/event-stream", _repeat(block, block, size), None)


def _answer(path: str, attack: Attack) -> _Body:
    if attack.answer == "images":
        return _media_json(_IMAGE_BLOCKS, attack)
    if attack.answer == "mesh":
        return _media_json(_MESH_BLOCKS, attack)
    if attack.answer == "sse":
        return _sse(attack)
    if attack.answer == "bytes":
        content_type = "model/gltf-binary" if "/3d" in path else "audio/wav"
        first = (_GLB if "/3d" in path else b"RIFF") + _BYTE_BLOCK[: _BLOCK - 4]
        # Truncated: chunked, and the connection closes where the closing chunk belongs.
        sized = not attack.endless and attack.malformed != "truncated"
        return _Body(
            content_type,
            _repeat(first[:_BLOCK], _BYTE_BLOCK, None if attack.endless else attack.bytes),
            attack.bytes if sized else None,
        )
    answer = json.dumps(
        {
            "id": "hostile",
            "object": "chat.completion",
            "created": 0,
            "model": "hostile",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hostile"}, "finish_reason": "stop"}
            ],
        }
    ).encode()
    return _Body("application/json", iter([answer]), len(answer))


def _chain(*parts: Iterator[bytes] | list[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield from part


# --- the server ---------------------------------------------------------------------------


class HostileEngine:
    """The connection handler; ``attack`` is the default answer, ``stats`` what happened."""

    def __init__(self, attack: Attack | None = None) -> None:
        self.attack = attack or Attack()
        self.stats = HostileStats()
        self._writers: set[asyncio.StreamWriter] = set()

    def abort_all(self) -> None:
        """Drop every open connection (endless answers never end by themselves)."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            request = await _read_request(reader)
            if request is not None:
                await self._answer(writer, *request)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.stats.disconnects += 1
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes) -> None:
        path = _strip_relay(path.split("?", 1)[0])
        if path in ("/healthz", "/v1/models", "/_stats"):
            payload = self._stats_json() if path == "/_stats" else {"object": "list", "data": []}
            data = json.dumps(payload).encode()
            writer.write(
                _head(200, [("content-type", "application/json"), ("content-length", str(len(data)))]) + data
            )
            await writer.drain()
            return
        self.stats.requests += 1
        self.stats.paths.append(path)
        attack = self._attack_for(body)
        answer = _answer(path, attack)
        for status in attack.informational:
            writer.write(_head(status, []))
        headers = list(attack.headers)
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("content-type", answer.content_type))
        headers.append(
            ("content-length", str(answer.length))
            if answer.length is not None
            else ("transfer-encoding", "chunked")
        )
        writer.write(_head(attack.status, headers))
        for part in answer.parts:
            writer.write(part if answer.length is not None else b"%x\r\n%s\r\n" % (len(part), part))
            self.stats.bytes_sent += len(part)
            await writer.drain()
        if answer.length is None and attack.malformed != "truncated":
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    def _attack_for(self, body: bytes) -> Attack:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            spec = json.loads(body).get("hostile")
            if isinstance(spec, dict):
                return Attack.from_json(spec, self.attack)
        return self.attack

    def _stats_json(self) -> dict[str, Any]:
        return {
            "requests": self.stats.requests,
            "paths": self.stats.paths,
            "bytes_sent": self.stats.bytes_sent,
            "disconnects": self.stats.disconnects,
            "attack": self.attack.to_json(),
        }


def _strip_relay(path: str) -> str:
    if path.startswith("/relay/"):
        rest = path[len("/relay/") :]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    reason = _REASONS.get(status, "OK" if status < 400 else "Error")
    lines = [f"HTTP/1.1 {status} {reason}".encode()]
    lines += [k.encode() + b": " + v.encode() for k, v in headers]
    if status >= 200:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _MAX_REQUEST_HEAD:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size + 2)
            del body[-2:]
            if len(body) > _MAX_REQUEST_BODY:
                return None
        return method, path, bytes(body)
    length = min(int(headers.get("content-length", "0") or 0), _MAX_REQUEST_BODY)
    return method, path, await reader.readexactly(length)


class HostileAgentRelay(Relay):
    """An agent relay that answers every request with the attack's head and a small JSON body."""

    def __init__(self, honest: Relay, attack: Attack | None = None) -> None:
        super().__init__(honest.catalog, honest.client)
        self.attack = attack or Attack(answer="json")

    async def open(self, *, body: AsyncIterator[bytes] | bytes, **request: Any) -> RelayResponse:
        received = body if isinstance(body, bytes) else b"".join([chunk async for chunk in body])
        attack = HostileEngine(self.attack)._attack_for(received)
        answer = _answer(str(request.get("path", "")), replace(attack, answer="json"))
        headers = list(attack.headers) or [("content-type", answer.content_type)]
        return RelayResponse(attack.status, headers, body=b"".join(answer.parts))


@contextlib.asynccontextmanager
async def serve_hostile(
    attack: Attack | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[HostileEngine, str]]:
    """A hostile engine on a loopback port in this event loop; yields it and its base URL."""
    engine = HostileEngine(attack)
    server = await asyncio.start_server(engine.handle, host, 0, limit=_MAX_REQUEST_HEAD)
    port = server.sockets[0].getsockname()[1]
    try:
        yield engine, f"http://{host}:{port}"
    finally:
        server.close()
        engine.abort_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--attack", default="{}", help="the default attack, as JSON (see above)")
    args = parser.parse_args(argv)
    engine = HostileEngine(Attack.from_json(json.loads(args.attack)))

    async def run() -> None:
        server = await asyncio.start_server(engine.handle, args.host, args.port, limit=_MAX_REQUEST_HEAD)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
