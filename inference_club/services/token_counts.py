"""Token counts read from an engine's answer, parsed as JSON (never pattern-matched).

Engines report usage in several shapes, all accepted:

- OpenAI / llama.cpp: ``{"usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}``;
- vLLM: the same plus nested ``prompt_tokens_details`` / ``completion_tokens_details``
  and extra fields;
- the Responses API: ``{"usage": {"input_tokens", "output_tokens", "total_tokens"}}``,
  in a stream inside the ``response.completed`` event's ``response``;
- Ollama's native counters: ``prompt_eval_count`` / ``eval_count``.

In a stream the last event that carries usage wins (OpenAI sends it in the final chunk);
:class:`StreamUsage` also notes whether the stream sent any event and ``[DONE]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["StreamUsage", "TokenCounts", "from_answer", "from_answer_tail", "from_document"]


@dataclass(frozen=True, slots=True)
class TokenCounts:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _from_usage(usage: dict[str, Any]) -> TokenCounts | None:
    prompt = _count(usage.get("prompt_tokens"))
    if prompt is None:
        prompt = _count(usage.get("input_tokens"))
    completion = _count(usage.get("completion_tokens"))
    if completion is None:
        completion = _count(usage.get("output_tokens"))
    total = _count(usage.get("total_tokens"))
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    if prompt is None and completion is None and total is None:
        return None
    return TokenCounts(prompt, completion, total)


def from_document(doc: Any) -> TokenCounts | None:
    """The counts of one parsed JSON answer or stream event, or None."""
    if not isinstance(doc, dict):
        return None
    usage = doc.get("usage")
    if isinstance(usage, dict) and (found := _from_usage(usage)) is not None:
        return found
    response = doc.get("response")  # Responses API stream events
    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
        return _from_usage(response["usage"])
    prompt, completion = _count(doc.get("prompt_eval_count")), _count(doc.get("eval_count"))
    if prompt is not None or completion is not None:
        total = prompt + completion if prompt is not None and completion is not None else None
        return TokenCounts(prompt, completion, total)
    return None


def from_answer(raw: bytes) -> TokenCounts | None:
    """Counts of a complete JSON answer."""
    try:
        return from_document(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None


_USAGE_KEY = b'"usage"'


def from_answer_tail(tail: bytes, *, complete: bool) -> TokenCounts | None:
    """Counts of a JSON answer of which only the end was kept (``complete``: all of it).

    OpenAI-style answers put ``usage`` last, so the object after the last ``"usage":``
    in the tail is decoded as JSON, nested details and all.
    """
    if complete:
        return from_answer(tail)
    at = tail.rfind(_USAGE_KEY)
    if at < 0:
        return None
    text = tail[at + len(_USAGE_KEY) :].decode("utf-8", "replace").lstrip()
    if not text.startswith(":"):
        return None
    try:
        usage, _ = json.JSONDecoder().raw_decode(text[1:].lstrip())
    except ValueError:
        return None
    return _from_usage(usage) if isinstance(usage, dict) else None


_MARKERS = (b'"usage"', b"[DONE]", b'"eval_count"')
_PASS_OVER_FROM = 1024  # bytes left in a read from which lines are passed over to a marker


def _to_next_marker(chunk: bytes, start: int) -> int:
    """The start of the line holding the first marker at or after ``start`` (past every
    whole line when there is none); ``start`` itself when what is left is short."""
    if len(chunk) - start < _PASS_OVER_FROM:
        return start  # an event or two: looking for markers costs more than it saves
    ahead = [at for marker in _MARKERS if (at := chunk.find(marker, start)) != -1]
    newline = chunk.rfind(b"\n", start, min(ahead)) if ahead else chunk.rfind(b"\n", start)
    return start if newline == -1 else newline + 1


class StreamUsage:
    """Watches a relayed SSE stream for usage, without holding more than one line.

    Only ``data:`` lines that mention usage counters (``"usage"`` that is not null, or
    Ollama's ``"eval_count"``) are parsed; the last one wins.
    A single line longer than ``max_line`` is skipped rather than buffered.
    Once an event was seen, a chunk of whole lines with none of the markers that matter
    (usage, ``[DONE]``) is passed over unsplit: most chunks of a stream are such. In a
    longer chunk (many events in one read) the lines before the first marker are passed
    over the same way.
    """

    def __init__(self, *, max_line: int = 4 * 1024 * 1024) -> None:
        self._partial = bytearray()
        self._skipping = False
        self._max_line = max_line
        self.counts: TokenCounts | None = None
        self.started = False
        """An event (a ``data:`` line with a payload, or an ``event:`` line) arrived."""
        self.done = False

    def feed(self, chunk: bytes) -> None:
        # Runs on every chunk of every relayed stream.
        if (
            self.started
            and not self._partial
            and not self._skipping
            and chunk.endswith(b"\n")
            and b'"usage"' not in chunk
            and b"[DONE]" not in chunk
            and b'"eval_count"' not in chunk
        ):
            return  # nothing in it can change what is watched
        # A line wholly inside the chunk is looked at in place, not through the buffer.
        # Once an event was seen, the whole lines before the next marker are passed over
        # unread: a read often holds many events (a short stream's all of them).
        watching = self.started and not self._partial and not self._skipping
        start = _to_next_marker(chunk, 0) if watching else 0
        partial = self._partial
        while (end := chunk.find(b"\n", start)) != -1:
            if self._skipping:
                self._skipping = False
                partial.clear()
            elif partial:
                partial += chunk[start:end]
                self._line(bytes(partial))
                partial.clear()
            else:
                self._line(chunk[start:end])
            start = end + 1
            if not watching and self.started:  # the first event: from here on as above
                watching = True
                start = _to_next_marker(chunk, start)
        if not self._skipping:
            self._partial += chunk[start:]
            if len(self._partial) > self._max_line:
                self._partial.clear()
                self._skipping = True

    def close(self) -> None:
        """The stream ended: a last line without its newline still counts."""
        if self._partial and not self._skipping:
            self._line(bytes(self._partial))
        self._partial.clear()

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):  # the blank separator lines, mostly
            if line.startswith(b"event:"):
                self.started = True
            return
        payload = line[5:].strip()
        if not payload:
            return
        self.started = True
        if payload == b"[DONE]":
            self.done = True
            return
        if b'"eval_count"' not in payload:
            usages = payload.count(b'"usage"')
            if not usages:
                return
            # Clients that ask for usage get "usage": null on every event but the last.
            if usages == payload.count(b'"usage":null') + payload.count(b'"usage": null'):
                return
        try:
            found = from_document(orjson.loads(payload))
        except orjson.JSONDecodeError:
            return
        if found is not None:
            self.counts = found
