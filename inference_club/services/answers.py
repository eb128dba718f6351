"""Reading engine answers under caps, and JSON media answers straight into files.

Engines are untrusted: an answer may be huge, endless or malformed. Every byte the hub
reads from an answer goes through :func:`capped_chunks` (``IC_MAX_ANSWER_BYTES``); media
files written from an answer go through :class:`MediaSink` (``IC_MAX_MEDIA_BYTES``); JSON
the hub must hold whole is capped by ``IC_MAX_JSON_ANSWER_BYTES``. Going past a cap fails
the call with :class:`AnswerTooLarge` while reading, never after buffering.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from inference_club.errors import AnswerTooLarge, UpstreamError
from inference_club.services.files import FileService, PendingFile, extension_for
from inference_club.services.media_json import (
    MediaBytes,
    MediaEnd,
    MediaJsonError,
    MediaJsonSplitter,
    MediaStart,
    SkeletonTooLarge,
)
from inference_club.services.transports.base import UpstreamResponse
from inference_club.settings import Settings
from inference_club.store.tables import StoredFile

_WRITE_BATCH = 1024 * 1024  # fewer, larger writes: each one is a thread hop
_SNIFF_BYTES = 12
_ENCODE_CHUNK = 3 * 256 * 1024  # a multiple of 3: base64 pieces concatenate cleanly


@dataclass(frozen=True, slots=True)
class AnswerLimits:
    answer_bytes: int
    media_bytes: int
    json_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> AnswerLimits:
        return cls(settings.max_answer_bytes, settings.max_media_bytes, settings.max_json_answer_bytes)

    def answer_too_large(self) -> AnswerTooLarge:
        return answer_too_large(f"{self.answer_bytes} bytes (IC_MAX_ANSWER_BYTES)")

    def json_too_large(self, limit: int | None = None) -> AnswerTooLarge:
        return answer_too_large(f"{limit or self.json_bytes} bytes of JSON (IC_MAX_JSON_ANSWER_BYTES)")

    def media_too_large(self) -> AnswerTooLarge:
        return answer_too_large(f"{self.media_bytes} bytes in one media file (IC_MAX_MEDIA_BYTES)")


def answer_too_large(detail: str) -> AnswerTooLarge:
    return AnswerTooLarge(f"Refused the provider's answer: answer larger than {detail}.")


async def capped_chunks(
    response: UpstreamResponse, limit: int, too_large: Callable[[], AnswerTooLarge]
) -> AsyncIterator[bytes]:
    """The answer's chunks; raises ``too_large()`` as soon as more than ``limit`` bytes came."""
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_large()
        yield chunk


class MediaSink:
    """One media file being written from an answer: batched writes, capped, typed on its first bytes."""

    def __init__(
        self, pending: PendingFile, limits: AnswerLimits, sniff: Callable[[bytes], str] | None
    ) -> None:
        self.pending = pending
        self._limits = limits
        self._sniff = sniff
        self._buffer = bytearray()
        self.size = 0

    async def write(self, data: bytes) -> None:
        if self._sniff is not None and self.size < _SNIFF_BYTES <= self.size + len(data):
            self._typed(bytes(self._buffer) + data)
        self.size += len(data)
        if self.size > self._limits.media_bytes:
            raise self._limits.media_too_large()
        self._buffer += data
        if len(self._buffer) >= _WRITE_BATCH:
            await self.pending.writer.write(bytes(self._buffer))
            self._buffer.clear()

    async def flush(self) -> None:
        if self._sniff is not None and self.size < _SNIFF_BYTES:
            self._typed(bytes(self._buffer))
        if self._buffer:
            await self.pending.writer.write(bytes(self._buffer))
            self._buffer.clear()

    def _typed(self, head: bytes) -> None:
        assert self._sniff is not None
        content_type = self._sniff(head)
        self.pending.content_type = content_type
        self.pending.filename = f"{self.pending.id}{extension_for(content_type)}"
        self._sniff = None


@dataclass(slots=True)
class MediaJsonAnswer:
    """A JSON media answer with its ``b64_json`` values stored: ``"b64_json": n`` names ``files[n]``."""

    answer: object
    files: dict[int, StoredFile] = field(default_factory=dict)


async def store_media_json(
    chunks: AsyncIterator[bytes],
    files: FileService,
    limits: AnswerLimits,
    *,
    user_id: str,
    content_type: str,
    sniff: Callable[[bytes], str] | None = None,
) -> MediaJsonAnswer:
    """Parse a JSON answer incrementally, decoding each ``b64_json`` value into its own file."""
    splitter = MediaJsonSplitter(skeleton_limit=limits.json_bytes)
    sinks: dict[int, MediaSink] = {}
    stored: dict[int, StoredFile] = {}
    try:
        async for chunk in chunks:
            for event in splitter.feed(chunk):
                if isinstance(event, MediaBytes):
                    await sinks[event.index].write(event.data)
                elif isinstance(event, MediaStart):
                    pending = await files.begin(user_id=user_id, content_type=content_type, purpose="output")
                    sinks[event.index] = MediaSink(pending, limits, sniff)
                elif isinstance(event, MediaEnd):
                    sink = sinks.pop(event.index)
                    await sink.flush()
                    stored[event.index] = await files.finish(sink.pending)
        answer = splitter.parse()
    except BaseException as exc:
        for sink in sinks.values():
            with contextlib.suppress(Exception):
                await sink.pending.writer.abort()
        for record in stored.values():
            with contextlib.suppress(Exception):
                await files.delete(record.id, user_id=user_id)
        if isinstance(exc, SkeletonTooLarge):
            raise limits.json_too_large() from None
        if isinstance(exc, MediaJsonError):
            raise UpstreamError(f"The provider's JSON answer is malformed: {exc}") from None
        raise
    return MediaJsonAnswer(answer, stored)


async def base64_of(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Base64 text of a byte stream, piece by piece."""
    carry = b""
    async for chunk in chunks:
        data = carry + chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        for start in range(0, cut, _ENCODE_CHUNK):
            yield base64.b64encode(data[start : min(cut, start + _ENCODE_CHUNK)])
    if carry:
        yield base64.b64encode(carry)


_PLACEHOLDER = re.compile(rb'"\\u0000ic-file:(\d+)\\u0000"')


def file_placeholder(index: int) -> str:
    """Stands for a file's base64 in a JSON document rendered by :func:`splice_files`."""
    return f"\x00ic-file:{index}\x00"


async def splice_files(
    document: bytes, files: FileService, records: list[StoredFile]
) -> AsyncIterator[bytes]:
    """Stream ``document`` (orjson output) with each placeholder replaced by its file's base64 string."""
    pos = 0
    for match in _PLACEHOLDER.finditer(document):
        if int(match.group(1)) >= len(records):
            continue  # the engine's own text, not a placeholder of this answer
        yield document[pos : match.start()] + b'"'
        async for piece in base64_of(files.content(records[int(match.group(1))])):
            yield piece
        yield b'"'
        pos = match.end()
    yield document[pos:]
