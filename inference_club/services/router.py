"""Route a call to a provider: candidates, capacity slot, transport, failover.

Failover happens only before the first response byte: a transport failure or a
502/503 answered by the agent moves on to the next candidate, up to
``failover_attempts`` more. Whoever gets an :class:`Attempt` must close it, which
frees the slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from inference_club.domain import routing
from inference_club.domain.endpoints import Endpoint
from inference_club.domain.providers import ProviderState
from inference_club.errors import Busy, NoProvider, UpstreamError, UpstreamTimeout
from inference_club.services.auth import Principal
from inference_club.services.capacity import CircuitBreaker, SlotPool
from inference_club.services.model_catalog import reachable_providers, why_no_provider
from inference_club.services.registry import ProviderRegistry
from inference_club.services.transports.base import (
    TransportBusy,
    Transports,
    TransportTimeout,
    TransportUnavailable,
    UpstreamRequest,
    UpstreamResponse,
)
from inference_club.settings import Settings

log = logging.getLogger("inference_club.router")

_FAILOVER_STATUSES = frozenset({502, 503})


class NoFreeSlot(Exception):
    """Background work found every candidate at capacity (or wanted by a waiting request)."""


@dataclass(slots=True)
class Attempt:
    """An open upstream response holding a capacity slot until closed."""

    provider: ProviderState
    response: UpstreamResponse
    slot: routing.SlotKey
    started: float
    _router: Router
    _closed: bool = False

    async def close(self, *, failed: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.response.aclose()
        finally:
            self._router.finish(self.slot, self.provider.id, failed=failed)


class Router:
    def __init__(
        self,
        settings: Settings,
        registry: ProviderRegistry,
        capacity: SlotPool,
        breaker: CircuitBreaker,
        transports: Transports,
    ) -> None:
        self._settings = settings
        self.registry = registry
        self.capacity = capacity
        self.breaker = breaker
        self.transports = transports
        registry.on_change(self._sync_limits)

    def _sync_limits(self, provider: ProviderState) -> None:
        for service in provider.services:
            self.capacity.set_limit((provider.id, service.index), service.max_concurrency)

    def candidates(self, principal: Principal, endpoint: Endpoint, model: str) -> list[routing.Candidate]:
        found = routing.candidates(
            self.registry.all(),
            user_id=principal.user_id,
            preference=principal.routing_preference,
            service_type=endpoint.service_type,
            model=model,
            now=time.time(),
            online_window_s=self._settings.online_window_s,
            required_feature=endpoint.required_feature,
        )
        return routing.order(found, load=self.capacity.load, is_open=self.breaker.is_open)

    def default_model(self, principal: Principal, endpoint: Endpoint) -> str | None:
        """A model the caller can reach for ``endpoint`` (when the client names none)."""
        for provider in self.registry.online():
            if not provider.usable_by(principal.user_id, principal.routing_preference):
                continue
            for service in provider.services:
                if service.type != endpoint.service_type:
                    continue
                for model in service.models.values():
                    if endpoint.required_feature is None or endpoint.required_feature in model.features:
                        return model.id
        return None

    def require_candidates(
        self, principal: Principal, endpoint: Endpoint, model: str
    ) -> list[routing.Candidate]:
        found = self.candidates(principal, endpoint, model)
        if not found:
            reachable = reachable_providers(
                self.registry.all(),
                principal,
                now=time.time(),
                online_window_s=self._settings.online_window_s,
            )
            raise NoProvider(why_no_provider(reachable, endpoint, model), param="model")
        return found

    async def open(
        self,
        principal: Principal,
        endpoint: Endpoint,
        request: UpstreamRequest,
        *,
        background: bool = False,
        found: Sequence[routing.Candidate] | None = None,
    ) -> Attempt:
        """Open an upstream response on the best candidate, failing over before the first byte.

        Synchronous calls wait FIFO for a slot up to the queue timeout (then 503 busy);
        ``background`` calls (jobs) only take a free slot nobody waits for, else
        :class:`NoFreeSlot`.
        """
        remaining = (
            list(found) if found is not None else self.require_candidates(principal, endpoint, request.model)
        )
        tries = 1 + self._settings.failover_attempts
        last_error: Exception | None = None
        only_busy = True  # every candidate tried was full, none failed
        for _ in range(tries):
            if not remaining:
                break
            by_key = {c.slot_key: c for c in remaining}
            keys = [c.slot_key for c in remaining]
            if background:
                slot = await self.capacity.take(keys, background=True)
                if slot is None:
                    raise NoFreeSlot(request.model)
            else:
                slot = await self.capacity.acquire(keys, timeout_s=self._settings.queue_timeout_s)
            if slot is None:
                raise self._busy(request.model)
            candidate = by_key[slot]
            remaining = [c for c in remaining if c.provider.id != candidate.provider.id]
            started = time.monotonic()
            try:
                transport = self.transports.for_provider(candidate.provider)
                response = await transport.send(candidate.provider, request)
            except TransportBusy as exc:
                # At its limit, not broken: its breaker is left alone.
                log.info("provider %s busy: %s", candidate.provider.name, exc)
                self.capacity.release(slot)
                last_error = exc
                continue
            except TransportUnavailable as exc:
                log.warning("provider %s unavailable: %s", candidate.provider.name, exc)
                self.finish(slot, candidate.provider.id, failed=True)
                last_error = exc
                only_busy = False
                continue
            except TransportTimeout as exc:
                self.finish(slot, candidate.provider.id, failed=True)
                raise UpstreamTimeout(str(exc)) from exc
            except BaseException:
                self.finish(slot, candidate.provider.id, failed=False)
                raise
            if response.status in _FAILOVER_STATUSES and remaining:
                log.warning("provider %s answered %s; failing over", candidate.provider.name, response.status)
                await response.aclose()
                self.finish(slot, candidate.provider.id, failed=True)
                last_error = UpstreamError(f"provider answered {response.status}")
                only_busy = False
                continue
            return Attempt(candidate.provider, response, slot, started, self)
        if last_error is not None and only_busy:
            if background:
                raise NoFreeSlot(request.model)
            raise self._busy(request.model)
        raise UpstreamError(f"No provider could serve the request: {last_error}")

    def _busy(self, model: str) -> Busy:
        return Busy(
            f"Every provider serving {model!r} is at capacity; try again shortly.",
            headers={"Retry-After": str(max(1, int(self._settings.queue_timeout_s)))},
        )

    def finish(self, slot: routing.SlotKey, provider_id: str, *, failed: bool) -> None:
        self.capacity.release(slot)
        if failed:
            self.breaker.failure(provider_id)
        else:
            self.breaker.success(provider_id)
