"""The transport seam. Routing and executors only see these types.

A transport either returns an open :class:`UpstreamResponse` (headers received) or
raises :class:`TransportUnavailable` before any byte came back, which makes the
failure safe to retry on another provider.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
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
    payload: bytes | None = None
    """The whole body when it is already in memory (a JSON call), else None: a transport
    may then send it with the request's head instead of streaming ``body``."""


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[str, str]]
    #: True when the agent itself produced the error (no service, engine unreachable).
    agent_error: bool

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class TransportUnavailable(Exception):
    """The provider could not be reached; nothing was received. Safe to fail over."""


class TransportBusy(TransportUnavailable):
    """Every way to the provider is at its limit of requests at once (each of its tunnels
    has as many streams open as its agent takes); nothing was sent. Not a failure of the
    provider: another one may take the request, or this one a moment later."""


class BadResponseHead(TransportUnavailable):
    """The agent's status or headers cannot be relayed; nothing of the answer was used."""


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters (tab aside): CR and LF end a header line, NUL ends it for many parsers.
_CONTROL_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Relayed headers must also fit HTTP's latin-1 text.
_RELAYED = frozenset({"content-type"})
_NOT_LATIN1 = re.compile(r"[^\x00-\xff]")


def check_response_head(provider: str, status: int, headers: Iterable[tuple[str, str]]) -> None:
    """Refuse a head that would break the client's connection or smuggle headers.

    Informational statuses (1xx) are not answers; CR, LF, NUL and other control
    characters in a header would split or end the hub's own response head.
    """
    if not 200 <= status <= 599:
        raise BadResponseHead(f"provider {provider!r} answered status {status}, which is not a final answer")
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise BadResponseHead(f"provider {provider!r} sent an invalid header name {name[:40]!r}")
        bad = _CONTROL_CHAR.search(value)
        if bad is None and name.lower() in _RELAYED:
            bad = _NOT_LATIN1.search(value)
        if bad is not None:
            raise BadResponseHead(
                f"provider {provider!r} sent header {name!r} with a forbidden character {bad.group()!r}"
            )


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
