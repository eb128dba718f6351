"""A minimal, fast OpenAI-compatible engine for benchmarks.

An HTTP/1.1 server written straight on asyncio's protocols (uvloop, httptools' parser;
keep-alive, content-length or chunked request bodies). Every answer is built once at
start-up and written with ``transport.write``, so a request costs little more than
parsing it: the benchmark's baseline measures the HTTP stack and the client, not the
engine, and the engine takes as little as it can of the cores it shares with the hub.

- ``GET  /v1/models``: one model.
- ``POST /v1/chat/completions``: a fixed short answer with usage; with
  ``"stream": true``, ``--chunks`` SSE chunks, a final chunk with ``finish_reason`` and
  usage, then ``data: [DONE]``, each event its own write and its own HTTP chunk. A
  ``max_tokens`` below ``--chunks`` ends the stream after that many content chunks, as an
  engine stops at its limit. Anything else: 404; a body that is not JSON: 400.

``--chunk-delay-ms`` spaces the chunks of a stream (the scale scenarios: many slow
streams at once). As a batching engine's decode step makes one token for every running
sequence, one clock ticks for all streams: on each tick every running stream gets its
next event. A stream's first event goes out with its head; its second on the first
tick after that (within one delay), the rest one delay apart (more when the
machine is too busy to keep the beat). Without a delay a
stream's events are written one after another at once.
``--answer-delay-s`` holds every non-streamed answer that long (a job that stays running
while its watchers wait).

Run: ``python bench/mock_engine.py --port 9100 [--model bench-model] [--chunks 20]``.
It prints ``ready PORT`` on stdout once listening (port 0 picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from typing import Any, cast

import httptools
import uvloop

CREATED = 1_764_115_200  # fixed: answers are identical from run to run
ANSWER = "The quick brown fox jumps over the lazy dog."
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class MockEngine:
    """What the engine answers; all bodies are precomputed bytes."""

    def __init__(
        self, model: str, chunks: int, chunk_delay_s: float = 0.0, answer_delay_s: float = 0.0
    ) -> None:
        self.model = model
        self.chunk_delay_s = chunk_delay_s
        self.answer_delay_s = answer_delay_s
        self.models_body = _dumps(
            {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": CREATED, "owned_by": "bench"}],
            }
        )
        self.completion_body = _dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 10, "total_tokens": 22},
            }
        )
        self.chunks = chunks
        self._stream_events_by_count = {chunks: self._stream_events(chunks)}
        self.clock = _Clock(chunk_delay_s) if chunk_delay_s else None
        self.not_found_body = _dumps({"error": {"message": "not found", "type": "invalid_request_error"}})

    def _stream_events(self, chunks: int) -> list[bytes]:
        def event(delta: dict[str, Any], finish: str | None, usage: dict[str, int] | None = None) -> bytes:
            payload: dict[str, Any] = {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if usage is not None:
                payload["usage"] = usage
            return _chunk(b"data: " + _dumps(payload) + b"\n\n")

        events = [event({"role": "assistant", "content": ""}, None)]
        events += [event({"content": f"tok{i} "}, None) for i in range(chunks)]
        events.append(
            event({}, "stop", {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks})
        )
        events.append(_chunk(b"data: [DONE]\n\n"))
        return events

    def _events_for(self, max_tokens: object) -> list[bytes]:
        """A stream's events, each already framed as one HTTP chunk."""
        count = self.chunks
        if isinstance(max_tokens, int) and 0 < max_tokens < count:
            count = max_tokens
        events = self._stream_events_by_count.get(count)
        if events is None:
            events = self._stream_events_by_count[count] = self._stream_events(count)
        return events

    def answer(self, conn: _Connection, method: bytes, path: str, body: bytes) -> None:
        path = path.split("?", 1)[0].rstrip("/")
        if method == b"GET" and path == "/v1/models":
            conn.respond(200, self.models_body)
        elif method == b"POST" and path == "/v1/chat/completions":
            try:
                request = json.loads(body) if body else {}
                stream = bool(request.get("stream"))
                max_tokens = request.get("max_tokens")
            except (ValueError, AttributeError):
                conn.respond(
                    400, _dumps({"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
                )
                return
            if not stream:
                if self.answer_delay_s:
                    conn.later(self.answer_delay_s, 200, self.completion_body)
                else:
                    conn.respond(200, self.completion_body)
                return
            events = self._events_for(max_tokens)
            conn.write(_STREAM_HEAD + events[0])
            if self.clock is not None:
                self.clock.join(conn, events)
                return
            for event in events[1:]:
                conn.write(event)
            conn.finish(_LAST_CHUNK)
        else:
            conn.respond(404, self.not_found_body)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Clock:
    """One timer for every running stream: each tick sends each its next event."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        # connection -> (its stream's events, the index of the next one to send)
        self._running: dict[_Connection, tuple[list[bytes], int]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def join(self, conn: _Connection, events: list[bytes]) -> None:
        self._running[conn] = (events, 1)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + self.period_s, self._tick)

    def leave(self, conn: _Connection) -> None:
        self._running.pop(conn, None)

    def _tick(self) -> None:
        running = self._running
        finished = []
        for conn, (events, index) in running.items():
            conn.write(events[index])
            index += 1
            if index == len(events):
                finished.append(conn)
            else:
                running[conn] = (events, index)
        for conn in finished:
            del running[conn]
            conn.finish(_LAST_CHUNK)
        if running:
            assert self._timer is not None
            loop = asyncio.get_running_loop()
            # On the beat; after a late tick (a busy machine) the next waits half a period at least.
            at = self._timer.when() + self.period_s
            self._timer = loop.call_at(max(at, loop.time() + self.period_s / 2), self._tick)
        else:
            self._timer = None


class _Connection(asyncio.Protocol):
    """One client connection: parses requests (httptools) and writes the answers."""

    def __init__(self, engine: MockEngine) -> None:
        self.engine = engine
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = bytearray()
        self.body: list[bytes] = []
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.keep_alive = False
            self.respond(400, _dumps({"error": {"message": "bad request", "type": "invalid_request_error"}}))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.engine.clock is not None:
            self.engine.clock.leave(self)

    # httptools' callbacks
    def on_message_begin(self) -> None:
        self.url.clear()
        self.body.clear()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        path = self.url.decode("latin-1")
        self.engine.answer(self, self.parser.get_method(), path, b"".join(self.body))

    # answers
    def write(self, data: bytes) -> None:
        transport = self.transport
        # A client that left is closing before it is lost: uvloop refuses writes then.
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def finish(self, data: bytes) -> None:
        self.write(data)
        if not self.keep_alive and self.transport is not None:
            self.transport.close()

    def respond(self, status: int, body: bytes) -> None:
        self.finish(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )

    def later(self, delay_s: float, status: int, body: bytes) -> None:
        asyncio.get_running_loop().call_later(delay_s, self.respond, status, body)


async def _serve(engine: MockEngine, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(engine), sock=sock, backlog=2048)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between a stream's chunks")
    parser.add_argument(
        "--answer-delay-s", type=float, default=0.0, help="pause before a non-streamed answer"
    )
    args = parser.parse_args(argv)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    sock.listen(2048)  # connections queue from here on, before the loop starts
    engine = MockEngine(args.model, args.chunks, args.chunk_delay_ms / 1000, args.answer_delay_s)
    print(f"ready {port}", flush=True)
    try:
        uvloop.run(_serve(engine, sock))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
