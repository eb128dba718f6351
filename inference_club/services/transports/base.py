"""The transport seam. Routing and executors only see these types.

A transport either returns an open :class:`UpstreamResponse` (headers received) or
raises :class:`TransportUnavailable` before any byte came back, which makes the
failure safe to retry on another provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from inference_club.domain.providers import ProviderState

BodyFactory = Callable[[], AsyncIterator[bytes]]
"""Returns a fresh iterator over the request body each call (replayable for failover)."""


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    service_type: str
    model: str
    method: str
    path: str  # "/v1/chat/completions", query string included when any
    headers: dict[str, str]
    body: BodyFactory
    request_id: str


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[str, str]]
    #: True when the agent itself produced the error (no service, engine unreachable).
    agent_error: bool

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class TransportUnavailable(Exception):
    """The provider could not be reached; nothing was received. Safe to fail over."""


class TransportTimeout(Exception):
    """The provider went silent for longer than the upstream timeout."""


class Transport(Protocol):
    name: str

    async def send(self, provider: ProviderState, request: UpstreamRequest) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Transports:
    """Transport implementations by name (``direct``, ``tunnel``)."""

    by_name: dict[str, Transport] = field(default_factory=dict)

    def for_provider(self, provider: ProviderState) -> Transport:
        transport = self.by_name.get(provider.transport)
        if transport is None:
            raise TransportUnavailable(f"transport {provider.transport!r} is not available")
        return transport

    async def aclose(self) -> None:
        for transport in self.by_name.values():
            await transport.aclose()
