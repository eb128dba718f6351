"""Per-key rate limits shared by every replica, kept in Redis.

Each key has two one-minute windows: a request counter and a token counter, each
starting with the first request (or token use) after the previous window ended and
expiring sixty seconds later. One Lua script reads both and counts the request, so
concurrent requests on any replica can never get more than ``rpm`` admissions per
window. Tokens are added after the call, from the usage the hub records; a window whose
tokens reach ``tpm`` refuses requests until it ends.

Redis down: ``admit`` raises ``SharedStateUnavailable`` (503 ``busy``) and token
spending made meanwhile is not counted.
"""

from __future__ import annotations

import asyncio
import logging

from redis.commands.core import AsyncScript

from inference_club.cluster.redis_link import RedisLink
from inference_club.errors import SharedStateUnavailable
from inference_club.services.ratelimit import RateState, Window, refuse

log = logging.getLogger("inference_club.ratelimit")

WINDOW_MS = 60_000

# KEYS: request window, token window. ARGV: rpm, tpm, window ms (0 = that limit is off).
# Returns {admitted, refused_by ('r'|'t'|''), requests, requests_ttl_ms, tokens, tokens_ttl_ms}.
_ADMIT = """
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local function ttl(key)
  local left = redis.call('PTTL', key)
  if left == -1 then
    redis.call('PEXPIRE', key, window)
    return window
  end
  if left < 0 then return 0 end  -- no window yet: the allowance is whole
  return left
end
local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
local tokens = 0
if tpm > 0 then
  tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tokens >= tpm then
    return {0, 't', requests, ttl(KEYS[1]), tokens, ttl(KEYS[2])}
  end
end
if rpm > 0 then
  if requests >= rpm then
    return {0, 'r', requests, ttl(KEYS[1]), tokens, ttl(KEYS[2])}
  end
  requests = redis.call('INCR', KEYS[1])
  if requests == 1 then redis.call('PEXPIRE', KEYS[1], window) end
end
return {1, '', requests, ttl(KEYS[1]), tokens, ttl(KEYS[2])}
"""

# KEYS: token window. ARGV: tokens, window ms.
_SPEND = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return used
"""


def window_keys(key_id: str) -> list[str]:
    """The key's request and token windows (one hash slot, for Redis Cluster too)."""
    return [f"ic:rl:{{{key_id}}}:requests", f"ic:rl:{{{key_id}}}:tokens"]


class SharedRateLimiter:
    def __init__(self, link: RedisLink, *, rpm: int, tpm: int) -> None:
        self._link = link
        self.rpm = rpm
        self.tpm = tpm
        self._admit: AsyncScript = link.client.register_script(_ADMIT)
        self._spend: AsyncScript = link.client.register_script(_SPEND)
        self._spending: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<SharedRateLimiter rpm={self.rpm} tpm={self.tpm} spending={len(self._spending)}>"

    @property
    def enabled(self) -> bool:
        return self.rpm > 0 or self.tpm > 0

    async def admit(self, key_id: str) -> RateState | None:
        if not self.enabled:
            return None
        async with self._link.call() as r:
            answer = await self._admit(
                keys=window_keys(key_id), args=[self.rpm, self.tpm, WINDOW_MS], client=r
            )
        admitted, refused_by, requests, requests_ttl, tokens, tokens_ttl = answer
        state = RateState(
            requests=Window(self.rpm, self.rpm - int(requests), int(requests_ttl) / 1000)
            if self.rpm
            else None,
            tokens=Window(self.tpm, self.tpm - int(tokens), int(tokens_ttl) / 1000) if self.tpm else None,
        )
        if int(admitted):
            return state
        if refused_by == b"t":
            raise refuse(state, wait_s=int(tokens_ttl) / 1000, what=f"{self.tpm} tokens per minute")
        raise refuse(state, wait_s=int(requests_ttl) / 1000, what=f"{self.rpm} requests per minute")

    def spend(self, key_id: str, tokens: int) -> None:
        if self.tpm <= 0 or tokens <= 0:
            return
        task = asyncio.create_task(self.spend_now(key_id, tokens), name="token-spend")
        self._spending.add(task)
        task.add_done_callback(self._spending.discard)

    async def spend_now(self, key_id: str, tokens: int) -> None:
        try:
            async with self._link.call() as r:
                await self._spend(keys=window_keys(key_id)[1:], args=[tokens, WINDOW_MS], client=r)
        except SharedStateUnavailable:
            log.warning("Redis unavailable: %d tokens of key %s not counted", tokens, key_id)

    async def settled(self) -> None:
        """Wait for the token counts already handed to ``spend`` to reach Redis."""
        while self._spending:
            await asyncio.gather(*list(self._spending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.settled()
