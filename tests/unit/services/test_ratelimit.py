"""Per-key limits in memory: request buckets that burst to the limit then refill, a token
budget that may be overdrawn by at most a minute's worth, and the 429 with its headers.
The limiter's clock is stepped by hand (no sleeping)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from inference_club.errors import RateLimited
from inference_club.services import ratelimit
from inference_club.services.ratelimit import LocalRateLimiter, RateState, RequestLimiter, TokenBudget, Window


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


def test_window_headers() -> None:
    window = Window(limit=60, remaining=-2, reset_s=-1.0)
    assert window.headers("requests") == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "0.000s",
    }
    both = RateState(requests=Window(10, 9, 6.0), tokens=Window(100, 50, 30.0)).headers()
    assert both["x-ratelimit-remaining-requests"] == "9" and both["x-ratelimit-reset-tokens"] == "30.000s"
    assert RateState().headers() == {}


def test_a_key_bursts_to_its_limit_then_waits_for_the_refill(clock: Clock) -> None:
    limiter = RequestLimiter(rpm=3)
    assert [w.remaining for w in (limiter.take("k"), limiter.take("k"), limiter.take("k")) if w] == [2, 1, 0]
    with pytest.raises(RateLimited) as caught:
        limiter.take("k")
    assert caught.value.headers["Retry-After"] == "20"  # one request every 60/3 s
    assert caught.value.headers["x-ratelimit-remaining-requests"] == "0"
    assert "3 requests per minute" in caught.value.message
    other = limiter.take("other")  # keys are apart
    assert other is not None and other.remaining == 2
    clock.now += 20
    window = limiter.take("k")
    assert window is not None and window.remaining == 0
    clock.now += 3600  # never more than the limit
    window = limiter.take("k")
    assert window is not None and window.remaining == 2


def test_zero_means_off(clock: Clock) -> None:
    assert not RequestLimiter(rpm=0).enabled and RequestLimiter(rpm=0).take("k") is None
    budget = TokenBudget(tpm=0)
    budget.spend("k", 10**9)
    assert budget.check("k") is None


def test_spending_may_overdraw_by_one_minute_at_most(clock: Clock) -> None:
    budget = TokenBudget(tpm=600)
    budget.spend("k", 100)
    found = budget.check("k")
    assert found is not None and found[0].remaining == 500 and found[1] == 0.0
    budget.spend("k", 10**6)
    found = budget.check("k")
    assert found is not None and found[0].remaining == -600
    assert found[1] == pytest.approx(60.1)  # back to one token after a minute and a bit
    budget.spend("k", -50)  # nothing negative is refunded
    found = budget.check("k")
    assert found is not None and found[0].remaining == -600


async def test_the_limiter_refuses_on_an_empty_token_budget_first(clock: Clock) -> None:
    limiter = LocalRateLimiter(rpm=10, tpm=100)
    state = await limiter.admit("k")
    assert state is not None and state.requests is not None and state.tokens is not None
    assert (state.requests.remaining, state.tokens.remaining) == (9, 100)
    limiter.spend("k", 150)
    with pytest.raises(RateLimited) as caught:
        await limiter.admit("k")
    assert "100 tokens per minute" in caught.value.message
    assert caught.value.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-limit-requests" not in caught.value.headers
    clock.now += 60
    assert await limiter.admit("k") is not None  # the budget refilled


async def test_a_request_refusal_carries_the_token_window_too(clock: Clock) -> None:
    limiter = LocalRateLimiter(rpm=1, tpm=1000)
    await limiter.admit("k")
    with pytest.raises(RateLimited) as caught:
        await limiter.admit("k")
    assert caught.value.headers["x-ratelimit-limit-tokens"] == "1000"
    assert caught.value.headers["x-ratelimit-limit-requests"] == "1"


async def test_a_limiter_with_both_limits_off_admits_everything(clock: Clock) -> None:
    limiter = LocalRateLimiter(rpm=0, tpm=0)
    assert not limiter.enabled
    for _ in range(100):
        assert await limiter.admit("k") is None
    await limiter.aclose()


async def test_requests_only_limiting_leaves_tokens_alone(clock: Clock) -> None:
    limiter = LocalRateLimiter(rpm=2, tpm=0)
    limiter.spend("k", 10**9)
    state = await limiter.admit("k")
    assert state is not None and state.tokens is None and state.requests is not None
