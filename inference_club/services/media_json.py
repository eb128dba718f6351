"""Read a JSON media answer chunk by chunk: ``b64_json`` values leave as decoded bytes.

Images and 3D engines answer ``{"data": [{"b64_json": "<base64>"}, ...]}`` where the
base64 strings may be hundreds of megabytes. :class:`MediaJsonSplitter` never holds such a
string: every ``b64_json`` string value is decoded as it arrives and handed out as
:class:`MediaBytes` events; in the rest of the answer (the *skeleton*, kept whole under a
cap) the string is replaced by the media's index, so ``"b64_json": 0`` names the first one.

Only the tokens needed for that are scanned (strings, ``:`` and the structural characters);
the skeleton is validated by a real JSON parser at the end.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

import orjson

MEDIA_KEY = b"b64_json"

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
# Like base64.b64decode(validate=False): anything outside the alphabet (line breaks) is skipped.
_NOT_B64 = bytes(c for c in range(256) if c not in _B64_ALPHABET)
_OUTSIDE_STOP = re.compile(rb'[":,{}\[\]]')
_SIMPLE_ESCAPES = {ord("/"): b"/", ord("\\"): b"\\", ord('"'): b'"'}
_WHITESPACE_ESCAPES = frozenset(b"nrtbf")
_DATA_URL_PROBE = 5  # len(b"data:")
_DATA_URL_HEADER_MAX = 256


class MediaJsonError(ValueError):
    """The answer is not JSON, its base64 is broken, or its non-media part is too large."""


class SkeletonTooLarge(MediaJsonError):
    """The JSON around the media went past the skeleton cap."""


@dataclass(frozen=True, slots=True)
class MediaStart:
    index: int


@dataclass(frozen=True, slots=True)
class MediaBytes:
    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MediaEnd:
    index: int


MediaEvent = MediaStart | MediaBytes | MediaEnd


class _Base64Stream:
    """Decodes base64 text that arrives in pieces of any length (a ``data:`` URL prefix is skipped)."""

    def __init__(self) -> None:
        self._pending = b""
        self._head: bytes | None = b""  # None once past a possible data-URL header

    def feed(self, text: bytes) -> bytes:
        if self._head is not None:
            text = self._skip_data_url(text)
            if not text:
                return b""
        clean = self._pending + text.translate(None, _NOT_B64)
        cut = len(clean) - len(clean) % 4
        self._pending = clean[cut:]
        return _decode(clean[:cut])

    def close(self) -> bytes:
        head, self._head = self._head, None
        if head:  # a short value that never grew past the data-URL probe
            return self.feed(head) + self.close()
        rest, self._pending = self._pending, b""
        if not rest:
            return b""
        if len(rest) % 4 == 1:
            raise MediaJsonError("the provider sent invalid base64 media (truncated)")
        return _decode(rest + b"=" * (-len(rest) % 4))

    def _skip_data_url(self, text: bytes) -> bytes:
        assert self._head is not None
        head = self._head + text
        if len(head) < _DATA_URL_PROBE and b"data:".startswith(head):
            self._head = head
            return b""
        if not head.startswith(b"data:"):
            self._head = None
            return head
        comma = head.find(b",")
        if comma < 0:
            if len(head) > _DATA_URL_HEADER_MAX:
                raise MediaJsonError("the provider sent a data: URL without a comma")
            self._head = head
            return b""
        self._head = None
        return head[comma + 1 :]


def _decode(text: bytes) -> bytes:
    if not text:
        return b""
    try:
        return binascii.a2b_base64(text)
    except binascii.Error as exc:
        raise MediaJsonError(f"the provider sent invalid base64 media: {exc}") from None


class MediaJsonSplitter:
    """Feed the answer's chunks; get media events; :meth:`close` gives the skeleton."""

    def __init__(self, *, skeleton_limit: int) -> None:
        self._limit = skeleton_limit
        self._skeleton = bytearray()
        self._carry = b""
        self._in_string = False
        self._string_start = 0
        self._last_string: bytes | None = None
        self._key: bytes | None = None
        self._media: _Base64Stream | None = None
        self.media_count = 0

    def feed(self, chunk: bytes) -> list[MediaEvent]:
        data = self._carry + chunk if self._carry else chunk
        self._carry = b""
        events: list[MediaEvent] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._media is not None:
                pos = self._scan_media(data, pos, events)
            elif self._in_string:
                pos = self._scan_string(data, pos)
            else:
                pos = self._scan_outside(data, pos, events)
        if len(self._skeleton) > self._limit:
            raise SkeletonTooLarge(f"the JSON around the media is larger than {self._limit} bytes")
        return events

    def close(self) -> bytes:
        """The skeleton, once the whole answer was fed (raises if it ended early)."""
        if self._carry or self._in_string or self._media is not None:
            raise MediaJsonError("the answer ended inside a JSON string")
        return bytes(self._skeleton)

    def parse(self) -> object:
        try:
            return orjson.loads(self.close())
        except orjson.JSONDecodeError as exc:
            raise MediaJsonError(f"the answer is not valid JSON: {exc}") from None

    # -- scanning -------------------------------------------------------------------------

    def _scan_outside(self, data: bytes, pos: int, events: list[MediaEvent]) -> int:
        match = _OUTSIDE_STOP.search(data, pos)
        if match is None:
            self._skeleton += data[pos:]
            return len(data)
        at = match.start()
        self._skeleton += data[pos:at]
        char = data[at]
        if char == ord('"'):
            if self._key == MEDIA_KEY:
                index = self.media_count
                self.media_count += 1
                self._skeleton += str(index).encode()
                self._media = _Base64Stream()
                events.append(MediaStart(index))
            else:
                self._skeleton += b'"'
                self._in_string = True
                self._string_start = len(self._skeleton)
            self._key = None
            return at + 1
        self._skeleton.append(char)
        self._key = _key_bytes(self._last_string) if char == ord(":") else None
        self._last_string = None
        return at + 1

    def _scan_string(self, data: bytes, pos: int) -> int:
        at = _string_stop(data, pos)
        if at < 0:
            self._skeleton += data[pos:]
            return len(data)
        self._skeleton += data[pos:at]
        if data[at] == ord("\\"):
            if at + 1 >= len(data):
                self._carry = data[at:]
                return len(data)
            self._skeleton += data[at : at + 2]
            return at + 2
        self._last_string = bytes(self._skeleton[self._string_start :])
        self._skeleton += b'"'
        self._in_string = False
        return at + 1

    def _scan_media(self, data: bytes, pos: int, events: list[MediaEvent]) -> int:
        media = self._media
        assert media is not None
        index = self.media_count - 1
        stop = _string_stop(data, pos)
        decoded = media.feed(data[pos:stop] if stop >= 0 else data[pos:])
        if decoded:
            events.append(MediaBytes(index, decoded))
        if stop < 0:
            return len(data)
        if data[stop] == ord('"'):
            tail = media.close()
            if tail:
                events.append(MediaBytes(index, tail))
            self._media = None
            events.append(MediaEnd(index))
            return stop + 1
        return self._media_escape(data, stop, media, index, events)

    def _media_escape(
        self, data: bytes, at: int, media: _Base64Stream, index: int, events: list[MediaEvent]
    ) -> int:
        if at + 1 >= len(data):
            self._carry = data[at:]
            return len(data)
        code = data[at + 1]
        if code in _SIMPLE_ESCAPES:
            text, width = _SIMPLE_ESCAPES[code], 2
        elif code in _WHITESPACE_ESCAPES:
            text, width = b"", 2
        elif code == ord("u"):
            if at + 6 > len(data):
                self._carry = data[at:]
                return len(data)
            try:
                text = chr(int(data[at + 2 : at + 6], 16)).encode("utf-8", "replace")
            except ValueError:
                raise MediaJsonError("the answer has a bad \\u escape in its base64") from None
            width = 6
        else:
            raise MediaJsonError("the answer has a bad escape in its base64")
        decoded = media.feed(text)
        if decoded:
            events.append(MediaBytes(index, decoded))
        return at + width


def _string_stop(data: bytes, pos: int) -> int:
    """Where the string at ``pos`` ends or escapes (-1: not in ``data``); memchr, not a regex."""
    quote = data.find(b'"', pos)
    backslash = data.find(b"\\", pos, quote if quote >= 0 else len(data))
    return backslash if backslash >= 0 else quote


def _key_bytes(raw: bytes | None) -> bytes | None:
    if raw is None or b"\\" not in raw:
        return raw
    try:
        value = orjson.loads(b'"' + raw + b'"')
    except orjson.JSONDecodeError:
        return None
    return value.encode() if isinstance(value, str) else None
