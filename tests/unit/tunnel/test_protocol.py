"""The tunnel's wire format: header layout, limits, typed payloads, the version check."""

from __future__ import annotations

import struct

import orjson
import pytest

from inference_club.tunnel.protocol import (
    HEADER,
    MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    CloseCode,
    Flag,
    Frame,
    FrameType,
    GoAway,
    Hello,
    ProtocolError,
    RequestHead,
    Reset,
    ResponseHead,
    UnsupportedVersion,
    Welcome,
    decode_frame,
    decode_frames,
    window_frame,
    window_increment,
)


def test_header_layout_is_type_flags_reserved_stream_length() -> None:
    encoded = Frame(FrameType.DATA, 7, Flag.END, b"abc").encode()
    assert HEADER.size == 12
    assert encoded == bytes([0x12, 0x01, 0, 0]) + struct.pack("!II", 7, 3) + b"abc"


@pytest.mark.parametrize(
    "frame",
    [
        Frame(FrameType.PING, 0, Flag.NONE, b"12345678"),
        Frame(FrameType.DATA, 1, Flag.NONE, bytes(range(256)) * 10),
        Frame(FrameType.DATA, 0xFFFFFFFF, Flag.END, b""),
        window_frame(3, 65536),
    ],
)
def test_round_trip(frame: Frame) -> None:
    assert decode_frame(frame.encode()) == frame


def test_body_bytes_travel_raw() -> None:
    payload = b"\x00\xff binary, not base64"
    assert Frame(FrameType.DATA, 1, Flag.NONE, payload).encode().endswith(payload)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x12\x00", "shorter than its header"),
        (HEADER.pack(0x12, 0, 0, 1, 5) + b"abc", "does not match"),
        (HEADER.pack(0x7F, 0, 0, 1, 0), "unknown frame type"),
        (HEADER.pack(0x12, 0x80, 0, 1, 0), "unknown flags"),
        (HEADER.pack(0x12, 0, 1, 1, 0), "reserved"),
        (HEADER.pack(0x12, 0, 0, 0, 0), "DATA frame on stream 0"),
        (HEADER.pack(0x04, 0, 0, 5, 0), "PING frame on stream 5"),
    ],
)
def test_malformed_frames_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_frame(data)


def test_maximum_frame_size() -> None:
    at_limit = Frame(FrameType.DATA, 1, Flag.NONE, b"x" * (MAX_FRAME_SIZE - HEADER.size)).encode()
    assert decode_frame(at_limit).payload == b"x" * (MAX_FRAME_SIZE - HEADER.size)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_frame(at_limit + b"x")
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode_frame(Frame(FrameType.DATA, 1, Flag.NONE, b"x" * 100).encode(), max_size=64)


def test_hello_round_trip_and_defaults() -> None:
    hello = Hello(
        heartbeat={"name": "rig", "services": []}, agent_version="0.1.0", window=4096, max_streams=8
    )
    parsed = Hello.from_frame(decode_frame(hello.to_frame().encode()))
    assert parsed == hello
    assert parsed.protocol == PROTOCOL_VERSION


def test_hello_with_another_version_is_refused_clearly() -> None:
    frame = Frame(FrameType.HELLO, payload=orjson.dumps({"protocol": 99, "heartbeat": {}}))
    with pytest.raises(UnsupportedVersion, match="tunnel protocol 99 is not supported") as info:
        Hello.from_frame(frame)
    assert info.value.close_code == CloseCode.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        orjson.dumps({"heartbeat": {}}),  # no version
        orjson.dumps({"protocol": 1}),  # no heartbeat
        orjson.dumps({"protocol": 1, "heartbeat": {}, "window": 10}),  # window too small
        orjson.dumps({"protocol": 1, "heartbeat": {}, "max_frame": "big"}),
    ],
)
def test_bad_hellos(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        Hello.from_frame(Frame(FrameType.HELLO, payload=payload))


def test_welcome_checks_the_version_too() -> None:
    welcome = Welcome(provider_id="prov_1", tunnel_id="tun_1", ping_interval_s=1.5)
    assert Welcome.from_frame(decode_frame(welcome.to_frame().encode())) == welcome
    data = orjson.loads(welcome.to_frame().payload)
    data["protocol"] = PROTOCOL_VERSION + 1
    with pytest.raises(UnsupportedVersion):
        Welcome.from_frame(Frame(FrameType.WELCOME, payload=orjson.dumps(data)))


def test_expecting_one_type_and_getting_another() -> None:
    with pytest.raises(ProtocolError, match="expected HELLO, got WELCOME"):
        Hello.from_frame(Welcome(provider_id="p", tunnel_id="t").to_frame())


def test_request_and_response_heads() -> None:
    head = RequestHead(
        "llm", "m", "POST", "/v1/chat/completions?x=1", {"content-type": "application/json"}, "req_1"
    )
    frame = decode_frame(head.to_frame(5, end=True).encode())
    assert frame.stream_id == 5 and frame.end
    assert RequestHead.from_payload(frame) == head
    response = ResponseHead(200, [("content-type", "text/event-stream"), ("x-a", "1"), ("x-a", "2")])
    assert ResponseHead.from_payload(decode_frame(response.to_frame(5).encode())) == response
    with pytest.raises(ProtocolError):
        ResponseHead.from_payload(Frame(FrameType.RESPONSE, 5, payload=orjson.dumps({"status": 42})))
    for headers in ({"a": "1"}, [["a"]], [["a", "1", "2"]], [[1, "1"]], [["a", 1]], [["a", None]], ["ab"]):
        payload = orjson.dumps({"status": 200, "headers": headers})
        with pytest.raises(ProtocolError, match="RESPONSE headers must be"):
            ResponseHead.from_payload(Frame(FrameType.RESPONSE, 5, payload=payload))
    with pytest.raises(ProtocolError):
        RequestHead.from_payload(
            Frame(
                FrameType.OPEN,
                5,
                payload=orjson.dumps(
                    {"service_type": "llm", "method": "GET", "path": "/v1/models", "headers": {"a": 1}}
                ),
            )
        )


def test_reset_goaway_window() -> None:
    reset = Reset("upstream_error", "the engine's answer broke off")
    assert Reset.from_frame(decode_frame(reset.to_frame(9).encode())) == reset
    goaway = GoAway("draining", "bye")
    assert GoAway.from_frame(decode_frame(goaway.to_frame().encode())) == goaway
    assert window_increment(window_frame(1, 1234)) == 1234
    with pytest.raises(ProtocolError):
        window_increment(Frame(FrameType.WINDOW, 1, payload=b"\x00\x00\x00\x00"))


# --------------------------------------------------------------------------- batches (version 3)


def test_a_batch_of_many_streams_frames_splits_back_exactly() -> None:
    frames = [Frame(FrameType.PING, 0, Flag.NONE, b"12345678")]
    for stream_id in range(1, 40):
        frames.append(Frame(FrameType.DATA, stream_id, Flag.NONE, bytes([stream_id]) * stream_id))
        frames.append(Frame(FrameType.DATA, stream_id, Flag.END))  # an empty payload too
    frames.append(window_frame(7, 4096))
    message = b"".join(f.encode() for f in frames)
    assert decode_frames(message) == frames
    assert decode_frames(frames[1].encode()) == [frames[1]]  # a single frame is a batch of one


def test_a_batch_is_refused_by_the_one_frame_decoder() -> None:
    two = (
        Frame(FrameType.DATA, 1, Flag.NONE, b"a").encode()
        + Frame(FrameType.DATA, 2, Flag.NONE, b"b").encode()
    )
    with pytest.raises(ProtocolError, match="does not match"):
        decode_frame(two)


_ONE = Frame(FrameType.DATA, 1, Flag.NONE, b"abc").encode()


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"", "shorter than its header"),
        (_ONE + _ONE[:5], "shorter than a header"),  # a truncated second header
        (_ONE + HEADER.pack(0x12, 0, 0, 2, 10) + b"short", "runs past the end"),
        (HEADER.pack(0x12, 0, 0, 1, 0xFFFFFFFF) + b"x" * 20, "runs past the end"),
        (_ONE + HEADER.pack(0x12, 0, 0, 0, 0), "DATA frame on stream 0"),
        (_ONE + HEADER.pack(0x7F, 0, 0, 1, 0), "unknown frame type"),
        (_ONE * 3000, "exceeds the limit"),
    ],
)
def test_a_broken_batch_is_a_protocol_error(message: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        decode_frames(message, max_size=32 * 1024)
    assert info.value.close_code == CloseCode.PROTOCOL_ERROR
