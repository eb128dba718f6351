"""A minimal, fast OpenAI-compatible engine for benchmarks.

Raw ASGI under uvicorn (uvloop + httptools, no access log). Every answer is built
once at start-up, so a request costs little more than reading its body: the
benchmark's baseline measures the HTTP stack and the client, not the engine.

- ``GET  /v1/models``: one model.
- ``POST /v1/chat/completions``: a fixed short answer with usage; with
  ``"stream": true``, ``--chunks`` SSE chunks (no delay between them), a final chunk
  with ``finish_reason`` and usage, then ``data: [DONE]``. A ``max_tokens`` below
  ``--chunks`` ends the stream after that many content chunks, as an engine stops at
  its limit.

``--chunk-delay-ms`` spaces the chunks of a stream (the scale scenarios: many slow
streams at once), ``--answer-delay-s`` holds every non-streamed answer that long (a
job that stays running while its watchers wait).

Run: ``python bench/mock_engine.py --port 9100 [--model bench-model] [--chunks 20]``.
It prints ``ready PORT`` on stdout once listening (port 0 picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CREATED = 1_764_115_200  # fixed: answers are identical from run to run
ANSWER = "The quick brown fox jumps over the lazy dog."


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class MockEngine:
    """The ASGI app; all bodies are precomputed bytes."""

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
            return b"data: " + _dumps(payload) + b"\n\n"

        events = [event({"role": "assistant", "content": ""}, None)]
        events += [event({"content": f"tok{i} "}, None) for i in range(chunks)]
        events.append(
            event({}, "stop", {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks})
        )
        events.append(b"data: [DONE]\n\n")
        return events

    def _events_for(self, max_tokens: object) -> list[bytes]:
        count = self.chunks
        if isinstance(max_tokens, int) and 0 < max_tokens < count:
            count = max_tokens
        events = self._stream_events_by_count.get(count)
        if events is None:
            events = self._stream_events_by_count[count] = self._stream_events(count)
        return events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"].rstrip("/")
        method: str = scope["method"]
        if method == "GET" and path == "/v1/models":
            await _respond(send, 200, self.models_body)
            return
        if method == "POST" and path == "/v1/chat/completions":
            body = await _read_body(receive)
            try:
                request = json.loads(body) if body else {}
                stream = bool(request.get("stream"))
            except ValueError:
                await _respond(
                    send, 400, _dumps({"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
                )
                return
            if stream:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                    }
                )
                for n, chunk in enumerate(self._events_for(request.get("max_tokens"))):
                    if n and self.chunk_delay_s:
                        await asyncio.sleep(self.chunk_delay_s)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                if self.answer_delay_s:
                    await asyncio.sleep(self.answer_delay_s)
                await _respond(send, 200, self.completion_body)
            return
        await _read_body(receive)
        await _respond(send, 404, self.not_found_body)


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

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

    config = uvicorn.Config(
        MockEngine(args.model, args.chunks, args.chunk_delay_ms / 1000, args.answer_delay_s),
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
        backlog=2048,
        timeout_keep_alive=75,
    )
    sock.listen(2048)  # connections queue from here on, before the loop starts
    print(f"ready {port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
