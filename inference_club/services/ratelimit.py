"""Per-key request limits: a token bucket per API key, kept in memory.

The bucket holds ``rpm`` requests and refills continuously, so a key may burst up to
its limit and then make one request every ``60 / rpm`` seconds. Answers carry the
``x-ratelimit-*-requests`` headers either way.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from inference_club.errors import RateLimited

_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class RateState:
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": f"{self.reset_s:.3f}s",
        }


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RequestLimiter:
    def __init__(self, *, rpm: int) -> None:
        self.rpm = rpm
        self._rate = rpm / 60.0
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __repr__(self) -> str:
        return f"<RequestLimiter rpm={self.rpm} keys={len(self._buckets)}>"

    @property
    def enabled(self) -> bool:
        return self.rpm > 0

    def take(self, key_id: str) -> RateState | None:
        """Spend one request of ``key_id``'s allowance; ``RateLimited`` when none is left."""
        if not self.enabled:
            return None
        now = time.monotonic()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.rpm), updated=now)
            self._buckets[key_id] = bucket
            while len(self._buckets) > _MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(float(self.rpm), bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
            self._buckets.move_to_end(key_id)
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / self._rate
            state = RateState(self.rpm, 0, (self.rpm - bucket.tokens) / self._rate)
            raise RateLimited(
                f"Over this key's limit of {self.rpm} requests per minute; retry in {wait:.1f}s.",
                headers={"Retry-After": str(max(1, math.ceil(wait))), **state.headers()},
            )
        bucket.tokens -= 1.0
        return RateState(self.rpm, int(bucket.tokens), (self.rpm - bucket.tokens) / self._rate)
