"""The heartbeat: tell the hub, every ``interval_s``, what this agent serves.

``POST {hub}/api/inference/agent/heartbeat/`` with ``Authorization: Bearer <key>`` and
the body described in docs/agent-protocol.md. The hub's answer sets the next interval and the ``agent_secret`` the
direct transport must accept. A beat goes out at once at start and whenever
:meth:`Heartbeat.poke` is called (discovery changed the model list). Failures (hub
down, 5xx, refused key) are retried with jittered exponential backoff capped at 30 s,
and logged when the kind of failure changes rather than on every retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .. import __version__
from ..domain.heartbeat import HeartbeatBody
from .discovery import Catalog

__all__ = [
    "Heartbeat",
    "HeartbeatAnswer",
    "HeartbeatError",
    "backoff_delay",
    "heartbeat_body",
]

log = logging.getLogger("inference_club.agent.heartbeat")

DEFAULT_INTERVAL_S = 30.0
MAX_BACKOFF_S = 30.0


class HeartbeatError(Exception):
    """One heartbeat failed. ``kind`` groups failures for logging."""

    def __init__(self, message: str, *, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    """The hub's answer to a heartbeat."""

    provider_id: str | None
    online: bool
    interval_s: float | None
    online_window_s: float | None
    agent_secret: str | None

    @classmethod
    def from_json(cls, data: Any) -> HeartbeatAnswer:
        if not isinstance(data, dict):
            raise HeartbeatError("the hub's answer is not a JSON object", kind="bad-answer")

        def number(name: str) -> float | None:
            value = data.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return float(value)
            return None

        provider_id = data.get("provider_id")
        secret = data.get("agent_secret")
        return cls(
            provider_id=str(provider_id) if provider_id is not None else None,
            online=bool(data.get("online", True)),
            interval_s=number("interval_s"),
            online_window_s=number("online_window_s"),
            agent_secret=secret if isinstance(secret, str) and secret else None,
        )


def heartbeat_body(
    *,
    name: str,
    transport: str,
    callback_url: str | None,
    catalog: Catalog,
    health: dict[str, Any],
    version: str = __version__,
) -> HeartbeatBody:
    """The heartbeat body (docs/agent-protocol.md), in the model the hub reads it with."""
    fields: dict[str, Any] = {"callback_url": callback_url} if callback_url is not None else {}
    return HeartbeatBody(
        name=name,
        transport=transport,
        version=version,
        services=catalog.declarations(),
        health=health,
        **fields,
    )


def backoff_delay(
    failures: int,
    *,
    base_s: float = 1.0,
    cap_s: float = MAX_BACKOFF_S,
    rng: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with jitter: in [d/2, d], d = min(cap, base * 2^(failures-1))."""
    exp = min(cap_s, base_s * float(2 ** max(0, min(failures - 1, 30))))
    return exp * (0.5 + 0.5 * rng())


class Heartbeat:
    """The heartbeat loop. ``on_answer`` sees every accepted answer."""

    def __init__(
        self,
        *,
        url: str,
        key: str,
        build_body: Callable[[], Awaitable[HeartbeatBody]],
        on_answer: Callable[[HeartbeatAnswer], None] | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        min_interval_s: float = 1.0,
        base_backoff_s: float = 1.0,
        max_backoff_s: float = MAX_BACKOFF_S,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._key = key
        self._build_body = build_body
        self._on_answer = on_answer
        self.interval_s = interval_s
        self.min_interval_s = min_interval_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.client = httpx.AsyncClient(timeout=timeout_s, transport=transport)
        self.failures = 0
        self.last_answer: HeartbeatAnswer | None = None
        self.registered = asyncio.Event()
        self._poked = asyncio.Event()
        self._last_failure_kind: str | None = None

    def __repr__(self) -> str:
        return f"<Heartbeat {self.url} every={self.interval_s:g}s failures={self.failures}>"

    def poke(self) -> None:
        """Send a beat now (the model list changed) rather than at the next interval."""
        self._poked.set()

    async def beat(self) -> HeartbeatAnswer:
        """Send one heartbeat. Raises :class:`HeartbeatError` on any failure."""
        body = await self._build_body()
        try:
            resp = await self.client.post(
                self.url, json=body.to_wire(), headers={"authorization": f"Bearer {self._key}"}
            )
        except httpx.HTTPError as exc:
            raise HeartbeatError(
                f"cannot reach the hub at {self.url}: {type(exc).__name__}: {exc}",
                kind="unreachable",
            ) from exc
        if resp.status_code in (401, 403):
            raise HeartbeatError(
                f"the hub refused the key (HTTP {resp.status_code}: {_detail(resp)}); "
                "check --key / IC_AGENT_KEY",
                kind="refused",
                status=resp.status_code,
            )
        if resp.status_code >= 400:
            raise HeartbeatError(
                f"the hub answered HTTP {resp.status_code}: {_detail(resp)}",
                kind=f"http-{resp.status_code // 100}xx",
                status=resp.status_code,
            )
        try:
            data = resp.json()
        except ValueError:
            raise HeartbeatError("the hub's answer is not JSON", kind="bad-answer") from None
        answer = HeartbeatAnswer.from_json(data)
        if answer.interval_s is not None:
            self.interval_s = max(self.min_interval_s, answer.interval_s)
        return answer

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until ``stop`` is set."""
        while not stop.is_set():
            self._poked.clear()
            try:
                answer = await self.beat()
            except HeartbeatError as exc:
                self.failures += 1
                delay = backoff_delay(self.failures, base_s=self.base_backoff_s, cap_s=self.max_backoff_s)
                self._log_failure(exc, delay)
                await _wait_any(stop, timeout=delay)
                continue
            except Exception:  # pragma: no cover - a bug must not end the loop
                self.failures += 1
                log.exception("heartbeat failed")
                await _wait_any(stop, timeout=self.max_backoff_s)
                continue
            self._accepted(answer)
            await _wait_any(stop, self._poked, timeout=self.interval_s)

    async def aclose(self) -> None:
        await self.client.aclose()

    def _accepted(self, answer: HeartbeatAnswer) -> None:
        if self._last_failure_kind is not None:
            log.info("heartbeat accepted by the hub again after %d failure(s)", self.failures)
        elif not self.registered.is_set():
            log.info(
                "registered with the hub as provider %s (online=%s, every %gs)",
                answer.provider_id or "?",
                answer.online,
                self.interval_s,
            )
        self.failures = 0
        self._last_failure_kind = None
        self.last_answer = answer
        if self._on_answer is not None:
            self._on_answer(answer)
        self.registered.set()

    def _log_failure(self, exc: HeartbeatError, delay: float) -> None:
        if exc.kind != self._last_failure_kind:
            level = logging.ERROR if exc.kind == "refused" else logging.WARNING
            log.log(level, "heartbeat failed: %s; retrying in %.1fs", exc, delay)
            self._last_failure_kind = exc.kind
        else:
            log.debug("heartbeat failed again (%d): %s; retrying in %.1fs", self.failures, exc, delay)


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waiters: Sequence[asyncio.Task[Any]] = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason_phrase
    if isinstance(data, dict):
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
    return str(data)[:200]
