"""Byte builders for the fake engine: real PNG, WAV, MP4 and GLB files without extra libraries.

Every builder is deterministic for its arguments, so a test can rebuild the expected bytes.
Large outputs are produced as chunk iterators so a 100 MB body never sits in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from array import array
from collections.abc import Iterator

WAV_SAMPLE_RATE = 16_000
_WAV_HEADER_SIZE = 44
_CHUNK_SIZE = 64 * 1024


def seed_from(*parts: object) -> int:
    """A stable 32-bit seed from arbitrary values (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


# --- PNG ---------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """An 8-bit RGB PNG with a gradient whose colours depend on `seed`."""
    if not (1 <= width <= 4096 and 1 <= height <= 4096):
        raise ValueError(f"PNG size out of range: {width}x{height}")
    base = ((seed >> 16) & 0xFF, (seed >> 8) & 0xFF, seed & 0xFF)
    reds = bytes((base[0] + x * 255 // max(1, width - 1)) & 0xFF for x in range(width))
    blues = bytes((base[2],)) * width
    rows = bytearray()
    row = bytearray(width * 3)
    row[0::3] = reds
    row[2::3] = blues
    for y in range(height):
        row[1::3] = bytes(((base[1] + y * 255 // max(1, height - 1)) & 0xFF,)) * width
        rows.append(0)  # filter type "None" for every scanline
        rows += row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + _png_chunk(b"IEND", b"")
    )


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of PNG bytes, or None when `data` is not a PNG."""
    if len(data) < 24 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


# --- WAV ---------------------------------------------------------------------------------


def wav_header(num_samples: int, sample_rate: int = WAV_SAMPLE_RATE) -> bytes:
    """RIFF/WAVE header for mono 16-bit PCM."""
    data_size = num_samples * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


def pcm_chunks(num_samples: int, seed: int = 0, sample_rate: int = WAV_SAMPLE_RATE) -> Iterator[bytes]:
    """A quiet sine tone (pitch from `seed`) as little-endian 16-bit PCM, in chunks."""
    frequency = 220 + seed % 440
    # One period repeated: cheap to produce for long outputs, and still a real waveform.
    period = max(1, round(sample_rate / frequency))
    one_period = array("h", (int(8000 * math.sin(2 * math.pi * i / period)) for i in range(period)))
    if array("h", [1]).tobytes() != b"\x01\x00":
        one_period.byteswap()
    samples_per_chunk = max(period, (_CHUNK_SIZE // 2) // period * period)
    block = (one_period * (samples_per_chunk // period)).tobytes()
    remaining = num_samples
    while remaining > 0:
        take = min(remaining, samples_per_chunk)
        yield block[: take * 2]
        remaining -= take


def wav_chunks(num_samples: int, seed: int = 0, sample_rate: int = WAV_SAMPLE_RATE) -> Iterator[bytes]:
    yield wav_header(num_samples, sample_rate)
    yield from pcm_chunks(num_samples, seed, sample_rate)


def wav_bytes(duration_s: float, seed: int = 0, sample_rate: int = WAV_SAMPLE_RATE) -> bytes:
    return b"".join(wav_chunks(wav_samples_for_duration(duration_s, sample_rate), seed, sample_rate))


def wav_samples_for_duration(duration_s: float, sample_rate: int = WAV_SAMPLE_RATE) -> int:
    return max(1, round(duration_s * sample_rate))


def wav_samples_for_size(total_bytes: int) -> int:
    """Sample count giving a WAV file of about `total_bytes` (header included)."""
    return max(1, (total_bytes - _WAV_HEADER_SIZE) // 2)


def wav_duration(data: bytes) -> float | None:
    """Duration in seconds of a PCM WAV, or None when `data` is not one we can read."""
    if len(data) < _WAV_HEADER_SIZE or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    byte_rate = 0
    while offset + 8 <= len(data):
        kind = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        if kind == b"fmt " and offset + 20 <= len(data):
            (byte_rate,) = struct.unpack("<I", data[offset + 16 : offset + 20])
        elif kind == b"data" and byte_rate:
            return float(size) / byte_rate
        offset += 8 + size + (size & 1)
    return None


# --- MP4 ---------------------------------------------------------------------------------


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _mvhd(duration_s: float) -> bytes:
    timescale = 1000
    identity_matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    payload = (
        struct.pack(">I", 0)  # version 0, flags 0
        + struct.pack(">IIII", 0, 0, timescale, round(duration_s * timescale))
        + struct.pack(">IH", 0x10000, 0x100)  # rate 1.0, volume 1.0
        + bytes(10)
        + identity_matrix
        + bytes(24)
        + struct.pack(">I", 2)  # next track id
    )
    return _box(b"mvhd", payload)


def mp4_chunks(total_bytes: int, duration_s: float = 1.0, seed: int = 0) -> Iterator[bytes]:
    """An ISO-BMFF file of exactly max(total_bytes, MP4_MIN_SIZE) bytes: ftyp, moov/mvhd, mdat.

    It has no tracks, so players show nothing, but every box parser accepts it.
    """
    head = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2mp41")
    head += _box(b"moov", _mvhd(duration_s))
    payload_size = max(16, total_bytes - len(head) - 16)
    # 64-bit mdat header (size 1 + largesize) keeps any length valid, even above 4 GiB.
    head += struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 16 + payload_size)
    yield head
    pattern = hashlib.sha256(str(seed).encode()).digest() * (_CHUNK_SIZE // 32)
    remaining = payload_size
    while remaining > 0:
        take = min(remaining, len(pattern))
        yield pattern[:take]
        remaining -= take


MP4_MIN_SIZE = sum(len(chunk) for chunk in mp4_chunks(0))


def mp4_boxes(data: bytes) -> list[str]:
    """Top-level box types of MP4 bytes (for assertions)."""
    kinds: list[str] = []
    offset = 0
    while offset + 8 <= len(data):
        (size,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if size == 1:
            (size,) = struct.unpack(">Q", data[offset + 8 : offset + 16])
        if size < 8:
            break
        kinds.append(kind.decode("latin-1"))
        offset += size
    return kinds


# --- GLB ---------------------------------------------------------------------------------


def glb_bytes(seed: int = 0) -> bytes:
    """A glTF 2.0 binary holding one triangle (scaled by `seed` so outputs differ)."""
    scale = 1.0 + (seed % 100) / 100
    positions = [(0.0, 0.0, 0.0), (scale, 0.0, 0.0), (0.0, scale, 0.0)]
    binary = b"".join(struct.pack("<3f", *p) for p in positions)
    document = {
        "asset": {"version": "2.0", "generator": "inference-club fake engine"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": len(binary)}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,  # FLOAT
                "count": 3,
                "type": "VEC3",
                "min": [0.0, 0.0, 0.0],
                "max": [scale, scale, 0.0],
            }
        ],
    }
    json_chunk = json.dumps(document, separators=(",", ":")).encode()
    json_chunk += b" " * (-len(json_chunk) % 4)  # the spec pads JSON with spaces
    binary += b"\x00" * (-len(binary) % 4)
    body = (
        struct.pack("<I", len(json_chunk))
        + b"JSON"
        + json_chunk
        + struct.pack("<I", len(binary))
        + b"BIN\x00"
        + binary
    )
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body
