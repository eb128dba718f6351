"""The tunnel's wire format, shared by the hub and the agent.

A frame is a fixed 12-byte header, then the payload. Before version 3 every WebSocket
message is exactly one frame; from version 3 a message may carry several frames back to
back (each with its own header, whose length says where the next one starts), so a busy
tunnel pays one WebSocket send for everything queued instead of one per frame.

::

    offset  size  field
    0       1     type        (FrameType)
    1       1     flags       (bit 0: END, the last frame of this direction of the stream)
    2       2     reserved    (zero)
    4       4     stream id   (big-endian; 0 for connection frames)
    8       4     length      (big-endian; payload bytes that follow)
    12      n     payload

Connection frames (stream 0) carry JSON (``HELLO``, ``WELCOME``, ``HEARTBEAT``,
``GOAWAY``, ``PROGRESS``) or 8 opaque bytes (``PING``/``PONG``). Stream frames carry a JSON head
(``OPEN``, ``RESPONSE``, ``RESET``), raw body bytes (``DATA``, never base64) or a
4-byte credit increment (``WINDOW``).

The header layout and the ``HELLO``/``WELCOME``/``GOAWAY`` frames never change; any
other change bumps :data:`PROTOCOL_VERSION`, which the hub checks in the hello and
refuses with ``GOAWAY {"code": "unsupported_version"}`` and close code 4001.

Versions: 1 is the base protocol; 2 adds ``PROGRESS`` (agent → hub, ``{"request_id",
"progress", "stage"}``: how far a long engine job is); 3 lets a message carry several
frames (never more than the receiver's ``max_frame`` bytes in all; the ``HELLO`` and the
``WELCOME`` still travel alone). The hub welcomes an agent with the lower of the two
sides' versions, and an agent sends ``PROGRESS`` only on a tunnel of version 2 or more.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, NamedTuple

import orjson

__all__ = [
    "BATCH_VERSION",
    "DEFAULT_MAX_STREAMS",
    "DEFAULT_WINDOW",
    "HEADER",
    "MAX_DATA_CHUNK",
    "MAX_FRAME_SIZE",
    "MAX_STREAMS",
    "PROGRESS_VERSION",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "CloseCode",
    "Flag",
    "Frame",
    "FrameType",
    "GoAway",
    "Hello",
    "Progress",
    "ProtocolError",
    "RequestHead",
    "Reset",
    "ResetCode",
    "ResponseHead",
    "UnsupportedVersion",
    "Welcome",
    "decode_frame",
    "decode_frames",
    "window_frame",
]

PROTOCOL_VERSION = 3
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1, 2, 3})
PROGRESS_VERSION = 2
"""The first version with ``PROGRESS`` frames."""
BATCH_VERSION = 3
"""The first version whose messages may carry several frames."""

HEADER = struct.Struct("!BBHII")
MAX_FRAME_SIZE = 1024 * 1024
"""Largest frame (header included) either side sends or accepts by default."""
MAX_DATA_CHUNK = 64 * 1024
"""Body bytes per ``DATA`` frame: large chunks are split so streams interleave."""
DEFAULT_WINDOW = 256 * 1024
"""Initial per-stream credit: body bytes a sender may have unacknowledged."""
MAX_WINDOW = 16 * 1024 * 1024
DEFAULT_MAX_STREAMS = 1024
MAX_STREAMS = 1 << 20
"""The most streams a hello may offer."""
MIN_FRAME_SIZE = 16 * 1024

PING_INTERVAL_S = 5.0
DEAD_AFTER_S = 12.0
"""A peer silent this long (no frame at all, pongs included) is dead: close."""
HELLO_TIMEOUT_S = 10.0


class FrameType(IntEnum):
    HELLO = 0x01  # agent → hub, first frame: version, heartbeat body, limits
    WELCOME = 0x02  # hub → agent: accepted; provider id, limits, timings
    HEARTBEAT = 0x03  # agent → hub: a fresh heartbeat body
    PING = 0x04
    PONG = 0x05
    GOAWAY = 0x06  # no new streams from now on (drain) or a refusal, with a reason
    PROGRESS = 0x07  # agent → hub (from version 2): progress of a long engine job
    OPEN = 0x10  # hub → agent: a new stream with its request head
    RESPONSE = 0x11  # agent → hub: the response head (status, headers)
    DATA = 0x12  # body bytes, either direction
    WINDOW = 0x13  # credit: the receiver consumed this many more body bytes
    RESET = 0x14  # abort the stream (either direction), with a code and a message


class Flag(IntFlag):
    NONE = 0
    END = 0x01


END_BIT = int(Flag.END)
"""``Flag.END`` as a plain int, for header fields read with ``struct``."""

_FRAME_TYPES = {int(kind): kind for kind in FrameType}  # FrameType(n) is slow on every frame
_FLAGS = {0: Flag.NONE, END_BIT: Flag.END}
_FIRST_STREAM_TYPE = int(FrameType.OPEN)  # types below it belong to the connection (stream 0)


class CloseCode(IntEnum):
    """WebSocket close codes the tunnel uses (4000-4999 are the application's)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_VERSION = 4001
    PROTOCOL_ERROR = 4002
    BAD_HELLO = 4003
    PEER_SILENT = 4008
    UNAUTHORIZED = 4401


class ResetCode:
    """Why a stream was reset (the ``code`` of a ``RESET`` frame)."""

    CANCEL = "cancel"  # the hub's client went away, or the hub gave up (timeout)
    REFUSED = "refused"  # the agent takes no new streams (draining, too many)
    UPSTREAM_ERROR = "upstream_error"  # the engine's answer broke off
    INTERNAL = "internal"  # a bug on the sending side


class ProtocolError(Exception):
    """The peer broke the protocol; the connection is closed with :attr:`close_code`."""

    close_code = CloseCode.PROTOCOL_ERROR


class UnsupportedVersion(ProtocolError):
    close_code = CloseCode.UNSUPPORTED_VERSION


# --------------------------------------------------------------------------- frames


class Frame(NamedTuple):
    """One frame. A named tuple: built and read on every chunk, cheaper than a frozen dataclass."""

    type: FrameType
    stream_id: int = 0
    flags: Flag = Flag.NONE
    payload: bytes = b""

    @property
    def end(self) -> bool:
        return self.flags == END_BIT  # END is the only flag: ``&`` on an IntFlag runs Python code

    def encode(self) -> bytes:
        return HEADER.pack(self.type, self.flags, 0, self.stream_id, len(self.payload)) + self.payload

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object (ProtocolError if it is not one)."""
        try:
            data = orjson.loads(self.payload)
        except orjson.JSONDecodeError:
            raise ProtocolError(f"{self.type.name} payload is not JSON") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"{self.type.name} payload is not a JSON object")
        return data


def decode_frame(data: bytes, *, max_size: int = MAX_FRAME_SIZE) -> Frame:
    """Parse one WebSocket message holding exactly one :class:`Frame`, checking size and header."""
    _check_message_size(data, max_size)
    length = HEADER.unpack_from(data)[4]
    if length != len(data) - HEADER.size:
        raise ProtocolError(f"frame length {length} does not match its payload ({len(data) - HEADER.size})")
    return _decode_at(data, 0)[0]


def decode_frames(data: bytes, *, max_size: int = MAX_FRAME_SIZE) -> list[Frame]:
    """Parse one WebSocket message of a version-3 tunnel: one or more frames back to back.

    Every header is checked as :func:`decode_frame` checks it; a frame whose length runs
    past the end of the message, or trailing bytes too short for a header, break the protocol.
    """
    _check_message_size(data, max_size)
    frames: list[Frame] = []
    offset = 0
    while offset < len(data):
        frame, offset = _decode_at(data, offset)
        frames.append(frame)
    return frames


def _check_message_size(data: bytes, max_size: int) -> None:
    if len(data) > max_size:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {max_size}")
    if len(data) < HEADER.size:
        raise ProtocolError(f"frame of {len(data)} bytes is shorter than its header")


def _decode_at(data: bytes, offset: int) -> tuple[Frame, int]:
    """The frame starting at ``offset`` and the offset just past it."""
    if len(data) - offset < HEADER.size:
        raise ProtocolError(f"{len(data) - offset} bytes left after a frame: shorter than a header")
    type_, flags, reserved, stream_id, length = HEADER.unpack_from(data, offset)
    start = offset + HEADER.size
    end = start + length
    if end > len(data):
        raise ProtocolError(f"frame length {length} runs past the end of its message ({len(data) - start})")
    if reserved:
        raise ProtocolError("reserved header bits are set")
    frame_type = _FRAME_TYPES.get(type_)
    if frame_type is None:
        raise ProtocolError(f"unknown frame type 0x{type_:02x}")
    flag = _FLAGS.get(flags)
    if flag is None:
        raise ProtocolError(f"unknown flags 0x{flags:02x}")
    connection_frame = type_ < _FIRST_STREAM_TYPE
    if connection_frame != (stream_id == 0):
        raise ProtocolError(f"{frame_type.name} frame on stream {stream_id}")
    return Frame(frame_type, stream_id, flag, bytes(data[start:end])), end


def _json_frame(type_: FrameType, data: dict[str, Any], stream_id: int = 0, *, end: bool = False) -> Frame:
    return Frame(type_, stream_id, Flag.END if end else Flag.NONE, orjson.dumps(data))


def window_frame(stream_id: int, increment: int) -> Frame:
    return Frame(FrameType.WINDOW, stream_id, Flag.NONE, struct.pack("!I", increment))


def window_increment(frame: Frame) -> int:
    if len(frame.payload) != 4:
        raise ProtocolError("WINDOW payload must be 4 bytes")
    increment: int = struct.unpack("!I", frame.payload)[0]
    if increment == 0:
        raise ProtocolError("WINDOW increment must not be 0")
    return increment


def _expect(frame: Frame, type_: FrameType) -> dict[str, Any]:
    if frame.type is not type_:
        raise ProtocolError(f"expected {type_.name}, got {frame.type.name}")
    return frame.json()


def _int(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"{name} must be an integer from {low} to {high}")
    return value


def _float(data: dict[str, Any], name: str, default: float) -> float:
    value = data.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ProtocolError(f"{name} must be a positive number")
    return float(value)


def _str(data: dict[str, Any], name: str, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string")
    return value


def check_version(data: dict[str, Any]) -> int:
    version = data.get("protocol")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("the hello has no protocol version")
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise UnsupportedVersion(f"tunnel protocol {version} is not supported (this side speaks {supported})")
    return version


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True, slots=True)
class Hello:
    """Agent → hub, the first frame. ``heartbeat`` is the heartbeat body of docs/agent-protocol.md."""

    heartbeat: dict[str, Any]
    agent_version: str = ""
    protocol: int = PROTOCOL_VERSION
    window: int = DEFAULT_WINDOW  # credit the hub may use per stream for request bodies
    max_frame: int = MAX_FRAME_SIZE  # largest frame the agent accepts
    max_streams: int = DEFAULT_MAX_STREAMS  # concurrent streams the agent accepts

    def to_frame(self) -> Frame:
        return _json_frame(
            FrameType.HELLO,
            {
                "protocol": self.protocol,
                "agent_version": self.agent_version,
                "window": self.window,
                "max_frame": self.max_frame,
                "max_streams": self.max_streams,
                "heartbeat": self.heartbeat,
            },
        )

    @classmethod
    def from_frame(cls, frame: Frame) -> Hello:
        data = _expect(frame, FrameType.HELLO)
        version = check_version(data)
        heartbeat = data.get("heartbeat")
        if not isinstance(heartbeat, dict):
            raise ProtocolError("the hello carries no heartbeat object")
        return cls(
            heartbeat=heartbeat,
            agent_version=_str(data, "agent_version", ""),
            protocol=version,
            window=_int(data, "window", DEFAULT_WINDOW, 1024, MAX_WINDOW),
            max_frame=_int(data, "max_frame", MAX_FRAME_SIZE, MIN_FRAME_SIZE, 64 * MAX_FRAME_SIZE),
            max_streams=_int(data, "max_streams", DEFAULT_MAX_STREAMS, 1, MAX_STREAMS),
        )


@dataclass(frozen=True, slots=True)
class Welcome:
    """Hub → agent: the hello was accepted."""

    provider_id: str
    tunnel_id: str
    protocol: int = PROTOCOL_VERSION
    window: int = DEFAULT_WINDOW  # credit the agent may use per stream for response bodies
    max_frame: int = MAX_FRAME_SIZE
    ping_interval_s: float = PING_INTERVAL_S
    dead_after_s: float = DEAD_AFTER_S
    heartbeat_interval_s: float = 30.0

    def to_frame(self) -> Frame:
        return _json_frame(
            FrameType.WELCOME,
            {
                "protocol": self.protocol,
                "provider_id": self.provider_id,
                "tunnel_id": self.tunnel_id,
                "window": self.window,
                "max_frame": self.max_frame,
                "ping_interval_s": self.ping_interval_s,
                "dead_after_s": self.dead_after_s,
                "heartbeat_interval_s": self.heartbeat_interval_s,
            },
        )

    @classmethod
    def from_frame(cls, frame: Frame) -> Welcome:
        data = _expect(frame, FrameType.WELCOME)
        return cls(
            provider_id=_str(data, "provider_id"),
            tunnel_id=_str(data, "tunnel_id", ""),
            protocol=check_version(data),
            window=_int(data, "window", DEFAULT_WINDOW, 1024, MAX_WINDOW),
            max_frame=_int(data, "max_frame", MAX_FRAME_SIZE, MIN_FRAME_SIZE, 64 * MAX_FRAME_SIZE),
            ping_interval_s=_float(data, "ping_interval_s", PING_INTERVAL_S),
            dead_after_s=_float(data, "dead_after_s", DEAD_AFTER_S),
            heartbeat_interval_s=_float(data, "heartbeat_interval_s", 30.0),
        )


@dataclass(frozen=True, slots=True)
class GoAway:
    """No new streams from the sender; ``code`` says why (``draining``, a refusal, ...)."""

    code: str
    message: str = ""
    supported: tuple[int, ...] = field(default_factory=lambda: tuple(sorted(SUPPORTED_VERSIONS)))

    def to_frame(self) -> Frame:
        return _json_frame(
            FrameType.GOAWAY, {"code": self.code, "message": self.message, "supported": list(self.supported)}
        )

    @classmethod
    def from_frame(cls, frame: Frame) -> GoAway:
        data = _expect(frame, FrameType.GOAWAY)
        supported = data.get("supported", [])
        versions = tuple(v for v in supported if isinstance(v, int)) if isinstance(supported, list) else ()
        return cls(code=_str(data, "code", "unknown"), message=_str(data, "message", ""), supported=versions)


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The ``OPEN`` frame: what the hub asks the agent's relay to do."""

    service_type: str
    model: str
    method: str
    path: str  # "/v1/...", query string included
    headers: dict[str, str]
    request_id: str = ""

    def to_frame(self, stream_id: int, *, end: bool = False) -> Frame:
        return _json_frame(
            FrameType.OPEN,
            {
                "service_type": self.service_type,
                "model": self.model,
                "method": self.method,
                "path": self.path,
                "headers": self.headers,
                "request_id": self.request_id,
            },
            stream_id,
            end=end,
        )

    @classmethod
    def from_payload(cls, frame: Frame) -> RequestHead:
        data = _expect(frame, FrameType.OPEN)
        headers = data.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ProtocolError("OPEN headers must be an object of strings")
        return cls(
            service_type=_str(data, "service_type"),
            model=_str(data, "model", ""),
            method=_str(data, "method"),
            path=_str(data, "path"),
            headers=headers,
            request_id=_str(data, "request_id", ""),
        )


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The ``RESPONSE`` frame: the engine's (or the agent's own) status and headers."""

    status: int
    headers: list[tuple[str, str]]

    def to_frame(self, stream_id: int, *, end: bool = False) -> Frame:
        return _json_frame(
            FrameType.RESPONSE,
            {"status": self.status, "headers": [list(h) for h in self.headers]},
            stream_id,
            end=end,
        )

    @classmethod
    def from_payload(cls, frame: Frame) -> ResponseHead:
        data = _expect(frame, FrameType.RESPONSE)
        status = _int(data, "status", 0, 100, 599)
        raw = data.get("headers", [])
        if not isinstance(raw, list):
            raise ProtocolError("RESPONSE headers must be a list of [name, value] pairs")
        headers: list[tuple[str, str]] = []
        for item in raw:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[0], str)
                and isinstance(item[1], str)
            ):
                raise ProtocolError("RESPONSE headers must be a list of [name, value] pairs")
            headers.append((item[0], item[1]))
        return cls(status, headers)


@dataclass(frozen=True, slots=True)
class Reset:
    code: str
    message: str = ""

    def to_frame(self, stream_id: int) -> Frame:
        return _json_frame(FrameType.RESET, {"code": self.code, "message": self.message}, stream_id)

    @classmethod
    def from_frame(cls, frame: Frame) -> Reset:
        data = _expect(frame, FrameType.RESET)
        return cls(code=_str(data, "code", ResetCode.INTERNAL), message=_str(data, "message", ""))


@dataclass(frozen=True, slots=True)
class Progress:
    """``PROGRESS``: how far the engine job of one request is (0 to 1, and a stage text)."""

    request_id: str
    progress: float
    stage: str = ""

    def to_frame(self) -> Frame:
        return _json_frame(
            FrameType.PROGRESS,
            {"request_id": self.request_id, "progress": self.progress, "stage": self.stage},
        )

    @classmethod
    def from_frame(cls, frame: Frame) -> Progress:
        data = _expect(frame, FrameType.PROGRESS)
        value = data.get("progress")
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ProtocolError("PROGRESS progress must be a number from 0 to 1")
        return cls(
            request_id=_str(data, "request_id")[:128],
            progress=float(value),
            stage=_str(data, "stage", "")[:200],
        )
