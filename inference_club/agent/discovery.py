"""The advertised model list of each service, and the loop that keeps it fresh.

A service advertises its declared models (always, with the capabilities the operator
wrote down) plus, when ``discover`` is true, the models its server lists. Discovered
models carry only what the engine itself states (a context length at most): nothing
is guessed. Every service is polled, even with ``discover = false``, so the health
snapshot can tell whether its server answers.

Listing and liveness are separate: a busy engine (llama.cpp answers ``/models`` only
between generations) that times out, or one that answers a listing error, keeps its
last known models for up to ``LISTING_FAILURES_TO_DROP`` polls in a row — requests keep
reaching it while it is merely busy. Only a refused connection (nothing listens) or
that many failures in a row fall back to the declared models. ``reachable`` is true
whenever the server accepted the connection. State changes are logged once
(ok → unreachable → ok), not on every poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..domain.heartbeat import ServiceDecl
from ..waiting import wait_event
from .adapters import Adapter, AdapterConfigError, adapter_for
from .config import ModelConfig, ServiceConfig
from .engines import DiscoveredModel, Engine, EngineListing, engine_for

__all__ = ["AdvertisedModel", "Catalog", "Discovery", "ServiceState"]

log = logging.getLogger("inference_club.agent.discovery")

#: Consecutive failed listings after which discovered models are no longer advertised.
LISTING_FAILURES_TO_DROP = 3


@dataclass(frozen=True, slots=True)
class AdvertisedModel:
    """A model as the agent advertises it to the hub."""

    id: str
    context_length: int | None = None
    features: tuple[str, ...] | None = None
    input_modalities: tuple[str, ...] | None = None
    output_modalities: tuple[str, ...] | None = None
    declared: bool = False

    @classmethod
    def from_config(cls, m: ModelConfig) -> AdvertisedModel:
        return cls(
            id=m.id,
            context_length=m.context_length,
            features=m.features,
            input_modalities=m.input_modalities,
            output_modalities=m.output_modalities,
            declared=True,
        )

    @classmethod
    def from_engine(cls, m: DiscoveredModel) -> AdvertisedModel:
        return cls(id=m.id, context_length=m.context_length)

    def to_wire(self) -> dict[str, Any]:
        """The heartbeat form (docs/agent-protocol.md): unknown capabilities are left out."""
        out: dict[str, Any] = {"id": self.id}
        if self.context_length is not None:
            out["context_length"] = self.context_length
        if self.input_modalities is not None:
            out["input_modalities"] = list(self.input_modalities)
        if self.output_modalities is not None:
            out["output_modalities"] = list(self.output_modalities)
        if self.features is not None:
            out["features"] = list(self.features)
        return out


class ServiceState:
    """A configured service at run time: its engine, advertised models, health, load.

    ``models`` and ``reachable`` are written by :class:`Discovery`; ``in_flight`` by
    the relay.
    """

    def __init__(self, index: int, config: ServiceConfig) -> None:
        self.index = index
        self.config = config
        self.engine: Engine = engine_for(config)
        self.adapter: Adapter | None = None
        self.disabled: str | None = None
        """Why this service cannot run (bad engine config); it then advertises nothing."""
        try:
            self.adapter = adapter_for(config)
        except AdapterConfigError as exc:
            self.disabled = str(exc)
        self.declared: tuple[AdvertisedModel, ...] = (
            () if self.disabled else tuple(AdvertisedModel.from_config(m) for m in config.models)
        )
        self.models: tuple[AdvertisedModel, ...] = self.declared
        self._ids: frozenset[str] = frozenset(m.id for m in self.models)
        self.reachable: bool | None = None
        self.problem: str | None = None
        self.last_poll_at: float | None = None
        self.listing_failures = 0
        self.in_flight = 0

    @property
    def label(self) -> str:
        return f"{self.config.type}#{self.index} ({self.config.url})"

    def serves(self, model: str) -> bool:
        return model in self._ids

    @property
    def busy(self) -> bool:
        return self.in_flight >= self.config.max_concurrency

    @property
    def last_error(self) -> str | None:
        """A short word on what last went wrong (config, reachability, a failed job)."""
        if self.disabled:
            return self.disabled
        if self.reachable is False:
            return "unreachable"
        if self.adapter is not None and self.adapter.last_error:
            return self.adapter.last_error
        return None

    def set_models(self, models: Sequence[AdvertisedModel]) -> bool:
        """Replace the advertised list; True when it changed."""
        new = tuple(models)
        if new == self.models:
            return False
        self.models = new
        self._ids = frozenset(m.id for m in new)
        return True

    def __repr__(self) -> str:
        return (
            f"<ServiceState {self.label} engine={self.engine.name} "
            f"models={len(self.models)} in_flight={self.in_flight} reachable={self.reachable}>"
        )


class Catalog:
    """Every service of the agent, in configuration order."""

    def __init__(self, services: Sequence[ServiceConfig]) -> None:
        self.services: tuple[ServiceState, ...] = tuple(ServiceState(i, s) for i, s in enumerate(services))
        for state in self.services:
            if state.disabled:
                log.error(
                    "service %s is disabled: %s; the agent serves its other services",
                    state.label,
                    state.disabled,
                )

    def candidates(self, service_type: str, model: str) -> list[ServiceState]:
        return [s for s in self.services if s.config.type == service_type and s.serves(model)]

    def declarations(self) -> list[ServiceDecl]:
        """The heartbeat's ``services`` list (docs/agent-protocol.md)."""
        return [
            ServiceDecl.model_validate(
                {
                    "type": s.config.type,
                    "engine": s.config.engine,
                    "max_concurrency": s.config.max_concurrency,
                    "models": [m.to_wire() for m in s.models],
                }
            )
            for s in self.services
        ]


def merge_models(
    declared: Sequence[AdvertisedModel], listing: EngineListing, *, discover: bool
) -> list[AdvertisedModel]:
    """Declared models first, then discovered ones not already declared."""
    out = list(declared)
    if not discover or listing.models is None:
        return out
    known = {m.id for m in declared}
    for m in listing.models:
        if m.id not in known:
            known.add(m.id)
            out.append(AdvertisedModel.from_engine(m))
    return out


class Discovery:
    """Polls every service's server and updates the catalog.

    ``on_change`` is called (synchronously) after a refresh that changed some
    service's advertised list, so the heartbeat can tell the hub at once.
    """

    def __init__(
        self,
        catalog: Catalog,
        client: httpx.AsyncClient,
        *,
        interval_s: float = 60.0,
        timeout_s: float = 10.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.client = client
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.on_change = on_change
        self._states: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"<Discovery services={len(self.catalog.services)} every={self.interval_s:g}s>"

    async def refresh(self) -> bool:
        """Poll every service once (concurrently); True when an advertised list changed."""
        results = await asyncio.gather(*(self._poll(s) for s in self.catalog.services))
        changed = any(results)
        if changed and self.on_change is not None:
            self.on_change()
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        """Re-poll every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            await wait_event(stop, self.interval_s)
            if stop.is_set():
                return
            try:
                await self.refresh()
            except Exception:  # pragma: no cover - a bug must not end the loop
                log.exception("model discovery failed")

    async def _poll(self, state: ServiceState) -> bool:
        if state.disabled:
            return False
        timeout = min(self.timeout_s, max(self.interval_s, 1.0))
        lister = state.adapter or state.engine
        listing = await lister.list_models(self.client, timeout=timeout)
        state.last_poll_at = time.time()
        state.reachable = listing.reachable
        state.problem = listing.problem
        self._log_state(state, listing)
        if listing.models is not None:
            state.listing_failures = 0
        else:
            state.listing_failures += 1
            if not listing.refused and state.listing_failures < LISTING_FAILURES_TO_DROP:
                return False  # keep the last known list: the engine may just be busy
        models = merge_models(state.declared, listing, discover=state.config.discover)
        changed = state.set_models(models)
        if changed:
            log.info(
                "service %s now advertises %d model(s): %s",
                state.label,
                len(state.models),
                ", ".join(m.id for m in state.models) or "-",
            )
        return changed

    def _log_state(self, state: ServiceState, listing: EngineListing) -> None:
        if not listing.reachable:
            key = "unreachable"
        elif listing.models is None:
            key = "no-listing"
        else:
            key = "ok"
        previous = self._states.get(state.index)
        if previous == key:
            return
        self._states[state.index] = key
        if key == "unreachable":
            log.warning(
                "service %s is unreachable (%s); %s",
                state.label,
                listing.problem,
                f"advertising its {len(state.declared)} declared model(s) only"
                if listing.refused
                else f"keeping its last known models for up to {LISTING_FAILURES_TO_DROP} polls",
            )
        elif key == "no-listing":
            if state.config.discover:
                log.warning(
                    "service %s is up but its models cannot be listed (%s); "
                    "keeping its last known models for up to %d polls, then its declared ones",
                    state.label,
                    listing.problem,
                    LISTING_FAILURES_TO_DROP,
                )
        elif previous is not None:
            log.info("service %s is reachable again", state.label)
