"""Which addresses the hub may call a direct agent at (no SSRF), checked at heartbeat and
again right before every connection.

An address is judged by what it reaches: ``::ffff:169.254.169.254`` (IPv4-mapped),
``::169.254.169.254`` (IPv4-compatible), NAT64 and 6to4 forms are the IPv4 address
inside them, and ``0.0.0.0`` / ``::`` reach this machine's loopback. Host names are
resolved for every connection (cached briefly) and the hub connects to the address it
checked, so a name that re-binds to a forbidden address after the heartbeat is refused.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio

from inference_club.domain.callback_url import CallbackUrl, IPAddress
from inference_club.settings import Settings

Resolver = Callable[[str, int], Awaitable[list[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
RESOLVE_TTL_S = 10.0
_RESOLVE_TIMEOUT_S = 5.0
_MAX_CACHED_NAMES = 4096


class CallbackBlocked(Exception):
    """A callback host that resolves nowhere, or into a network the hub may not call."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def reached_address(address: IPAddress) -> IPAddress:
    """The address a connection to ``address`` actually reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return reached_address(address.ipv4_mapped)
        if address.sixtofour is not None:
            return reached_address(address.sixtofour)
        if address in _NAT64:
            return reached_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.is_unspecified:
            return ipaddress.IPv6Address("::1")
        if address in _IPV4_COMPATIBLE and not address.is_loopback:
            return reached_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return address
    if address.is_unspecified or address in ipaddress.IPv4Network("0.0.0.0/8"):
        return ipaddress.IPv4Address("127.0.0.1")  # Linux connects 0.0.0.0 to loopback
    return address


def _networks(cidrs: Sequence[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def _in_any(address: IPAddress, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


@dataclass(slots=True)
class _Resolved:
    addresses: list[IPAddress]
    expires: float


class CallbackPolicy:
    def __init__(
        self,
        *,
        allow_cidrs: Sequence[str] = (),
        deny_cidrs: Sequence[str] = (),
        allow_private: bool = True,
        resolver: Resolver = system_resolver,
        resolve_ttl_s: float = RESOLVE_TTL_S,
    ) -> None:
        self._allow = _networks(allow_cidrs)
        self._deny = _networks(deny_cidrs)
        self._allow_private = allow_private
        self._resolver = resolver
        self._resolve_ttl_s = resolve_ttl_s
        self._resolved: dict[tuple[str, int], _Resolved] = {}
        self._verdicts: dict[IPAddress, str | None] = {}

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver = system_resolver) -> CallbackPolicy:
        return cls(
            allow_cidrs=settings.callback_allow_cidrs,
            deny_cidrs=settings.callback_deny_cidrs,
            allow_private=settings.private_callbacks_allowed,
            resolver=resolver,
        )

    def __repr__(self) -> str:
        return (
            f"<CallbackPolicy allow={len(self._allow)} deny={len(self._deny)} "
            f"private={'allowed' if self._allow_private else 'denied'}>"
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why the hub may not connect to ``address``, or None when it may."""
        reached = reached_address(address)
        shown = str(address) if reached == address else f"{address}, which reaches {reached}"
        if _in_any(address, self._deny) or _in_any(reached, self._deny):
            return f"points into a blocked network ({shown})"
        if self._allow:
            if not _in_any(reached, self._allow):
                return f"is blocked: {shown} is outside the allowed networks (IC_CALLBACK_ALLOW_CIDRS)"
            return None  # an explicit allow-list entry covers private ranges too
        if not self._allow_private and (not reached.is_global or reached.is_multicast):
            return (
                f"is blocked: {shown} is a loopback, private or reserved address; "
                "set IC_ALLOW_PRIVATE_CALLBACKS=true or list its network in IC_CALLBACK_ALLOW_CIDRS"
            )
        return None

    async def addresses(self, target: CallbackUrl) -> list[IPAddress]:
        """Every address ``target`` reaches, all of them allowed; else CallbackBlocked."""
        literal = target.ip
        if literal is not None:
            self._check([literal])
            return [literal]
        key = (target.host, target.port)
        cached = self._resolved.get(key)
        if cached is not None and cached.expires > time.monotonic():
            return cached.addresses
        try:
            with anyio.fail_after(_RESOLVE_TIMEOUT_S):
                found = await self._resolver(target.host, target.port)
        except OSError:
            raise CallbackBlocked(f"host {target.host!r} does not resolve") from None
        except TimeoutError:
            raise CallbackBlocked(
                f"host {target.host!r} did not resolve within {_RESOLVE_TIMEOUT_S:g} s"
            ) from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(a.split("%", 1)[0]) for a in found))
        if not addresses:
            raise CallbackBlocked(f"host {target.host!r} does not resolve")
        self._check(addresses)
        if len(self._resolved) >= _MAX_CACHED_NAMES:
            self._resolved.clear()
        self._resolved[key] = _Resolved(addresses, time.monotonic() + self._resolve_ttl_s)
        return addresses

    def _check(self, addresses: Sequence[IPAddress]) -> None:
        for address in addresses:
            # The policy never changes, so a verdict per address is computed once (hot path).
            if address not in self._verdicts:
                if len(self._verdicts) >= _MAX_CACHED_NAMES:
                    self._verdicts.clear()
                self._verdicts[address] = self.refusal(address)
            reason = self._verdicts[address]
            if reason is not None:
                raise CallbackBlocked(reason)
