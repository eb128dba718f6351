"""Per-key rate limits: requests per minute and tokens per minute.

:class:`RateLimiter` is what the request path uses: ``admit`` before an inference call
(429 ``rate_limited`` with ``Retry-After`` when the key is over a limit) and ``spend``
once the call's token usage is known. Two implementations:

- :class:`LocalRateLimiter` (this module): buckets in this process's memory, the
  embedded default;
- :class:`~inference_club.cluster.ratelimit.SharedRateLimiter`: one-minute windows in
  Redis, shared by every replica (``IC_REDIS_URL``).

In memory, each key has a request bucket holding ``rpm`` requests that refills
continuously (a key may burst up to its limit, then make one request every
``60 / rpm`` seconds), and a token budget of ``tpm`` tokens refilled the same way.
Tokens are counted after the fact from the usage the hub records, so a large answer
can overdraw the budget; the overdraft is capped at one minute's worth, so a key waits
at most a minute. A request is refused while the budget is empty.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from inference_club.errors import RateLimited

_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Window:
    """One limit's state for a key: the limit, what is left, seconds until it is whole again."""

    limit: int
    remaining: int
    reset_s: float

    def headers(self, unit: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{unit}": str(self.limit),
            f"x-ratelimit-remaining-{unit}": str(max(0, self.remaining)),
            f"x-ratelimit-reset-{unit}": f"{max(0.0, self.reset_s):.3f}s",
        }


@dataclass(frozen=True, slots=True)
class RateState:
    requests: Window | None = None
    tokens: Window | None = None

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.requests is not None:
            headers.update(self.requests.headers("requests"))
        if self.tokens is not None:
            headers.update(self.tokens.headers("tokens"))
        return headers


def refuse(state: RateState, *, wait_s: float, what: str) -> RateLimited:
    """The 429 for a key over ``what`` (e.g. "its limit of 120 requests per minute")."""
    return RateLimited(
        f"Over this key's limit of {what}; retry in {wait_s:.1f}s.",
        headers={"Retry-After": str(max(1, math.ceil(wait_s))), **state.headers()},
    )


class RateLimiter(Protocol):
    """Per-key limits as the request path sees them."""

    @property
    def enabled(self) -> bool: ...

    async def admit(self, key_id: str) -> RateState | None:
        """Count one request of ``key_id``; ``RateLimited`` when a limit is spent; None when off."""
        ...

    def spend(self, key_id: str, tokens: int) -> None:
        """``key_id`` used ``tokens`` tokens (never blocks; the next ``admit`` sees them)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Bucket:
    level: float
    updated: float


class _Buckets:
    """Buckets of ``capacity`` refilled at ``capacity`` per minute, one per key, bounded in number."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def current(self, key_id: str) -> _Bucket:
        now = time.monotonic()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = _Bucket(level=float(self.capacity), updated=now)
            self._buckets[key_id] = bucket
            while len(self._buckets) > _MAX_KEYS:
                self._buckets.popitem(last=False)
        else:
            bucket.level = min(float(self.capacity), bucket.level + (now - bucket.updated) * self.rate)
            bucket.updated = now
            self._buckets.move_to_end(key_id)
        return bucket

    def window(self, bucket: _Bucket) -> Window:
        return Window(self.capacity, math.floor(bucket.level), (self.capacity - bucket.level) / self.rate)


class RequestLimiter:
    """Requests per minute per key, in memory."""

    def __init__(self, *, rpm: int) -> None:
        self.rpm = rpm
        self._buckets = _Buckets(rpm)

    def __repr__(self) -> str:
        return f"<RequestLimiter rpm={self.rpm} keys={len(self._buckets)}>"

    @property
    def enabled(self) -> bool:
        return self.rpm > 0

    def take(self, key_id: str) -> Window | None:
        """Spend one request of ``key_id``'s allowance; ``RateLimited`` when none is left."""
        if not self.enabled:
            return None
        bucket = self._buckets.current(key_id)
        if bucket.level < 1.0:
            wait = (1.0 - bucket.level) / self._buckets.rate
            raise refuse(
                RateState(requests=self._buckets.window(bucket)),
                wait_s=wait,
                what=f"{self.rpm} requests per minute",
            )
        bucket.level -= 1.0
        return self._buckets.window(bucket)


class TokenBudget:
    """Tokens per minute per key, in memory; spending may overdraw by up to one minute's worth."""

    def __init__(self, *, tpm: int) -> None:
        self.tpm = tpm
        self._buckets = _Buckets(tpm)

    def __repr__(self) -> str:
        return f"<TokenBudget tpm={self.tpm} keys={len(self._buckets)}>"

    @property
    def enabled(self) -> bool:
        return self.tpm > 0

    def check(self, key_id: str) -> tuple[Window, float] | None:
        """The key's token window and how long until it may ask again (0 = now); None when off."""
        if not self.enabled:
            return None
        bucket = self._buckets.current(key_id)
        wait = 0.0 if bucket.level >= 1.0 else (1.0 - bucket.level) / self._buckets.rate
        return self._buckets.window(bucket), wait

    def spend(self, key_id: str, tokens: int) -> None:
        if not self.enabled or tokens <= 0:
            return
        bucket = self._buckets.current(key_id)
        bucket.level = max(-float(self.tpm), bucket.level - tokens)


class LocalRateLimiter:
    """Both limits in this process's memory (the embedded default)."""

    def __init__(self, *, rpm: int, tpm: int) -> None:
        self.requests = RequestLimiter(rpm=rpm)
        self.tokens = TokenBudget(tpm=tpm)

    def __repr__(self) -> str:
        return f"<LocalRateLimiter {self.requests!r} {self.tokens!r}>"

    @property
    def enabled(self) -> bool:
        return self.requests.enabled or self.tokens.enabled

    async def admit(self, key_id: str) -> RateState | None:
        if not self.enabled:
            return None
        token_check = self.tokens.check(key_id)
        if token_check is not None and token_check[1] > 0:
            window, wait = token_check
            raise refuse(RateState(tokens=window), wait_s=wait, what=f"{self.tokens.tpm} tokens per minute")
        token_window = token_check[0] if token_check is not None else None
        try:
            requests = self.requests.take(key_id)
        except RateLimited as exc:
            if token_window is not None:
                exc.headers.update(token_window.headers("tokens"))
            raise
        return RateState(requests=requests, tokens=token_window)

    def spend(self, key_id: str, tokens: int) -> None:
        self.tokens.spend(key_id, tokens)

    async def aclose(self) -> None:
        return None
