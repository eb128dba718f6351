"""Opaque, prefixed, sortable ids (``job_…``, ``prov_…``, ``key_…``)."""

from __future__ import annotations

import time

from inference_club.domain.randomness import random_bytes

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    """A time-ordered id: 10 chars of milliseconds + 16 random chars."""
    millis = int(time.time() * 1000)
    rand = int.from_bytes(random_bytes(10), "big")
    return f"{prefix}_{_b32(millis, 10)}{_b32(rand, 16)}"
