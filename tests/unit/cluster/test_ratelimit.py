"""Per-key limits kept in a real Redis: counts, windows and their boundaries, token spending, Redis down.

A window's end is played by shortening its TTL in Redis, so no test waits a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from inference_club.cluster.ratelimit import WINDOW_MS, SharedRateLimiter, window_keys
from inference_club.cluster.redis_link import RedisLink
from inference_club.errors import RateLimited, SharedStateUnavailable
from inference_club.testing.servers import free_port


async def test_requests_counted_per_key(redis_url: str) -> None:
    link = RedisLink(redis_url)
    try:
        limiter = SharedRateLimiter(link, rpm=3, tpm=0)
        remaining = []
        for _ in range(3):
            state = await limiter.admit("key_a")
            assert state is not None and state.requests is not None and state.tokens is None
            remaining.append(state.requests.remaining)
            assert 0 < state.requests.reset_s <= 60
        assert remaining == [2, 1, 0]
        with pytest.raises(RateLimited) as refused:
            await limiter.admit("key_a")
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
        assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"
        assert "3 requests per minute" in refused.value.message
        other = await limiter.admit("key_b")
        assert other is not None and other.requests is not None and other.requests.remaining == 2
        assert await SharedRateLimiter(link, rpm=0, tpm=0).admit("key_a") is None
    finally:
        await link.aclose()


async def test_tokens_spent_refuse_the_next_request(redis_url: str) -> None:
    link = RedisLink(redis_url)
    try:
        limiter = SharedRateLimiter(link, rpm=0, tpm=10)
        fresh = await limiter.admit("key_a")
        assert fresh is not None and fresh.tokens is not None and fresh.requests is None
        assert fresh.tokens.remaining == 10
        assert fresh.tokens.reset_s == 0  # nothing spent: the budget is whole
        await limiter.spend_now("key_a", 4)
        partly = await limiter.admit("key_a")
        assert partly is not None and partly.tokens is not None and partly.tokens.remaining == 6
        limiter.spend("key_a", 8)  # overdraws: counted, the call was already answered
        await limiter.settled()
        with pytest.raises(RateLimited) as refused:
            await limiter.admit("key_a")
        assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
        assert "10 tokens per minute" in refused.value.message
        assert await limiter.admit("key_b") is not None
    finally:
        await link.aclose()


async def test_redis_down_answers_busy() -> None:
    link = RedisLink(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    try:
        limiter = SharedRateLimiter(link, rpm=5, tpm=5)
        with pytest.raises(SharedStateUnavailable):
            await limiter.admit("key_a")
        await limiter.spend_now("key_a", 3)  # not counted, and no error for the finished call
    finally:
        await link.aclose()


REQUESTS, TOKENS = window_keys("key_a")


@pytest.fixture
async def link(redis_url: str) -> AsyncIterator[RedisLink]:
    link = RedisLink(redis_url)
    yield link
    await link.aclose()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    await client.aclose()


async def end_window(r: aioredis.Redis, key: str) -> None:
    await r.pexpire(key, 1)
    deadline = time.monotonic() + 5
    while await r.exists(key):
        assert time.monotonic() < deadline, f"{key} did not expire"
        await asyncio.sleep(0.01)


def test_both_windows_of_a_key_share_one_hash_slot() -> None:
    assert REQUESTS != TOKENS
    assert all("{key_a}" in key for key in (REQUESTS, TOKENS))


async def test_the_request_window_starts_with_the_first_request_and_lasts_a_minute(
    link: RedisLink, r: aioredis.Redis
) -> None:
    limiter = SharedRateLimiter(link, rpm=2, tpm=0)
    assert not await r.exists(REQUESTS)
    await limiter.admit("key_a")
    assert WINDOW_MS - 5000 < await r.pttl(REQUESTS) <= WINDOW_MS
    assert not await r.exists(TOKENS)  # no token limit: no token window either


async def test_the_last_request_of_a_window_is_admitted_the_next_refused_and_not_counted(
    link: RedisLink, r: aioredis.Redis
) -> None:
    limiter = SharedRateLimiter(link, rpm=2, tpm=0)
    await limiter.admit("key_a")
    last = await limiter.admit("key_a")
    assert last is not None and last.requests is not None and last.requests.remaining == 0
    await r.pexpire(REQUESTS, 20_000)  # what is left of the window
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("key_a")
    assert refused.value.headers["Retry-After"] == "20"
    assert refused.value.headers["x-ratelimit-limit-requests"] == "2"
    assert int(await r.get(REQUESTS) or 0) == 2


async def test_a_new_window_gives_the_whole_allowance_again(link: RedisLink, r: aioredis.Redis) -> None:
    limiter = SharedRateLimiter(link, rpm=1, tpm=0)
    await limiter.admit("key_a")
    with pytest.raises(RateLimited):
        await limiter.admit("key_a")
    await end_window(r, REQUESTS)
    state = await limiter.admit("key_a")
    assert state is not None and state.requests is not None
    assert state.requests.remaining == 0
    assert state.requests.reset_s > 55  # a fresh minute


async def test_a_window_left_without_expiry_gets_one(link: RedisLink, r: aioredis.Redis) -> None:
    await r.set(REQUESTS, 5)  # as if a writer died between counting and setting the expiry
    await r.set(TOKENS, 1)
    state = await SharedRateLimiter(link, rpm=10, tpm=10).admit("key_a")
    assert state is not None and state.requests is not None and state.tokens is not None
    assert state.requests.remaining == 4 and state.tokens.remaining == 9
    assert 0 < await r.pttl(REQUESTS) <= WINDOW_MS
    assert 0 < await r.pttl(TOKENS) <= WINDOW_MS


@pytest.mark.parametrize(("spent", "admitted"), [(9, True), (10, False), (11, False)])
async def test_tokens_one_short_of_the_limit_still_admit(
    link: RedisLink, r: aioredis.Redis, spent: int, admitted: bool
) -> None:
    limiter = SharedRateLimiter(link, rpm=0, tpm=10)
    await limiter.spend_now("key_a", spent)
    await r.pexpire(TOKENS, 7_000)
    if admitted:
        state = await limiter.admit("key_a")
        assert state is not None and state.tokens is not None and state.tokens.remaining == 10 - spent
        return
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("key_a")
    assert refused.value.headers["Retry-After"] == "7"  # the token window's end


async def test_a_spent_token_budget_refuses_before_the_request_count_and_says_so(
    link: RedisLink, r: aioredis.Redis
) -> None:
    limiter = SharedRateLimiter(link, rpm=1, tpm=10)
    await limiter.admit("key_a")
    await limiter.spend_now("key_a", 10)
    await r.pexpire(REQUESTS, 50_000)
    await r.pexpire(TOKENS, 3_000)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit("key_a")
    assert "10 tokens per minute" in refused.value.message
    assert refused.value.headers["Retry-After"] == "3"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"


async def test_spending_starts_the_token_window_once_and_never_extends_it(
    link: RedisLink, r: aioredis.Redis
) -> None:
    limiter = SharedRateLimiter(link, rpm=0, tpm=100)
    await limiter.spend_now("key_a", 3)
    assert WINDOW_MS - 5000 < await r.pttl(TOKENS) <= WINDOW_MS
    await r.pexpire(TOKENS, 5_000)
    await limiter.spend_now("key_a", 4)
    assert 0 < await r.pttl(TOKENS) <= 5_000
    assert int(await r.get(TOKENS) or 0) == 7


async def test_nothing_is_spent_without_a_token_limit_or_tokens(link: RedisLink, r: aioredis.Redis) -> None:
    SharedRateLimiter(link, rpm=5, tpm=0).spend("key_a", 10)
    with_limit = SharedRateLimiter(link, rpm=0, tpm=5)
    with_limit.spend("key_a", 0)
    with_limit.spend("key_a", -3)
    await with_limit.settled()
    assert not await r.exists(TOKENS)


async def test_concurrent_requests_never_get_more_than_the_limit(link: RedisLink, r: aioredis.Redis) -> None:
    limiter = SharedRateLimiter(link, rpm=5, tpm=0)

    async def one() -> bool:
        try:
            await limiter.admit("key_a")
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*[one() for _ in range(40)])
    assert results.count(True) == 5
    assert int(await r.get(REQUESTS) or 0) == 5
