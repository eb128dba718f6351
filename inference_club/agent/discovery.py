"""The advertised model list of each service, and the loop that keeps it fresh.

A service advertises its declared models (always, with the capabilities the operator
wrote down) plus, when ``discover`` is true, the models its server lists. Discovered
models carry only what the engine itself states (a context length at most): nothing
is guessed. Every service is polled, even with ``discover = false``, so the health
snapshot can tell whether its server answers.

When a server cannot be listed, its service falls back to its declared models. The
failure is logged once when the state changes (ok → unreachable → ok), not on every
poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .config import ModelConfig, ServiceConfig
from .engines import DiscoveredModel, Engine, EngineListing, engine_for

__all__ = ["AdvertisedModel", "Catalog", "Discovery", "ServiceState"]

log = logging.getLogger("inference_club.agent.discovery")


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
        """The heartbeat form (SPEC §6): unknown capabilities are left out."""
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
        self.declared: tuple[AdvertisedModel, ...] = tuple(
            AdvertisedModel.from_config(m) for m in config.models
        )
        self.models: tuple[AdvertisedModel, ...] = self.declared
        self._ids: frozenset[str] = frozenset(m.id for m in self.models)
        self.reachable: bool | None = None
        self.problem: str | None = None
        self.last_poll_at: float | None = None
        self.in_flight = 0

    @property
    def label(self) -> str:
        return f"{self.config.type}#{self.index} ({self.config.url})"

    def serves(self, model: str) -> bool:
        return model in self._ids

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
        self.services: tuple[ServiceState, ...] = tuple(
            ServiceState(i, s) for i, s in enumerate(services)
        )

    def candidates(self, service_type: str, model: str) -> list[ServiceState]:
        return [s for s in self.services if s.config.type == service_type and s.serves(model)]

    def to_wire(self) -> list[dict[str, Any]]:
        """The heartbeat's ``services`` list (SPEC §6)."""
        return [
            {
                "type": s.config.type,
                "engine": s.config.engine,
                "max_concurrency": s.config.max_concurrency,
                "models": [m.to_wire() for m in s.models],
            }
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            if stop.is_set():
                return
            try:
                await self.refresh()
            except Exception:  # pragma: no cover - a bug must not end the loop
                log.exception("model discovery failed")

    async def _poll(self, state: ServiceState) -> bool:
        timeout = min(self.timeout_s, max(self.interval_s, 1.0))
        listing = await state.engine.list_models(self.client, timeout=timeout)
        state.last_poll_at = time.time()
        state.reachable = listing.reachable
        state.problem = listing.problem
        self._log_state(state, listing)
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
                "service %s is unreachable (%s); advertising its %d declared model(s) only",
                state.label,
                listing.problem,
                len(state.declared),
            )
        elif key == "no-listing":
            if state.config.discover:
                log.warning(
                    "service %s answers but its models cannot be listed (%s); "
                    "advertising its declared models only",
                    state.label,
                    listing.problem,
                )
        elif previous is not None:
            log.info("service %s is reachable again", state.label)
