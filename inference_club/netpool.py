"""One pooled HTTP client made of several small connection pools.

httpcore's pool re-examines every one of its connections (a ``poll()`` per idle
connection) each time a request starts or ends, so its cost per request grows with the
pool. Spreading requests round-robin over a few small pools keeps that cost flat at
high concurrency. Used by the hub (to reach agents) and by the agent (to reach engines).

With ``IC_HTTP_TRANSPORT=lean`` (the default) plain ``http://`` exchanges (every engine
and agent on a private network) go through :class:`~inference_club.http1.Http1Transport`,
cheaper per request (bench/RESULTS.md); the sharded httpx pools carry the rest
(``https://``, ``HEAD``). ``IC_HTTP_TRANSPORT=httpx`` sends everything through the
sharded pools. The variable is read where the client is built, so it applies to the hub
and to the agent alike.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import AsyncIterator, Mapping
from http.client import HTTPResponse
from http.cookiejar import Cookie, CookieJar
from typing import Any, Literal, Protocol, cast, get_args
from urllib.request import Request

import httpx

from inference_club.http1 import HeaderPairs, Http1Transport

DEFAULT_SHARDS = 8
TransportKind = Literal["lean", "httpx"]
TRANSPORT_VARIABLE = "IC_HTTP_TRANSPORT"
DEFAULT_TRANSPORT: TransportKind = "lean"


def transport_kind(environ: Mapping[str, str] = os.environ) -> TransportKind:
    """The transport ``IC_HTTP_TRANSPORT`` names (unset or empty: the default)."""
    value = environ.get(TRANSPORT_VARIABLE, "").strip().lower() or DEFAULT_TRANSPORT
    if value not in get_args(TransportKind):
        raise ValueError(
            f"{TRANSPORT_VARIABLE} must be one of {', '.join(get_args(TransportKind))}, not {value!r}"
        )
    return cast(TransportKind, value)


class ShardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, limits: httpx.Limits, shards: int = DEFAULT_SHARDS) -> None:
        def share(total: int | None) -> int | None:
            return None if total is None else max(1, math.ceil(total / shards))

        shard_limits = httpx.Limits(
            max_connections=share(limits.max_connections),
            max_keepalive_connections=share(limits.max_keepalive_connections),
            keepalive_expiry=limits.keepalive_expiry,
        )
        # One TLS context for all shards: each costs a read of the CA bundle (~0.1 s).
        tls = httpx.create_ssl_context()
        self._shards = [httpx.AsyncHTTPTransport(limits=shard_limits, verify=tls) for _ in range(shards)]
        self._order = itertools.cycle(self._shards)

    def __repr__(self) -> str:
        return f"<ShardedTransport shards={len(self._shards)}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._order).handle_async_request(request)

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def pooled_transport(
    *, limits: httpx.Limits, shards: int = DEFAULT_SHARDS, kind: TransportKind | None = None
) -> httpx.AsyncBaseTransport:
    """The sharded httpx pools, behind the lean transport unless ``kind`` (or, when it is
    None, ``IC_HTTP_TRANSPORT``) says ``httpx``."""
    sharded = ShardedTransport(limits=limits, shards=shards)
    if (kind or transport_kind()) == "httpx":
        return sharded
    return Http1Transport(limits=limits, fallback=sharded)


class NoCookies(CookieJar):
    """A cookie jar that keeps nothing: what :class:`PooledClient`'s cookies stand on."""

    def extract_cookies(self, response: HTTPResponse, request: Request) -> None:
        return None

    def set_cookie(self, cookie: Cookie) -> None:
        return None


class _UnkeptCookies(httpx.Cookies):
    """Cookies that ignore every answer's ``Set-Cookie``.

    httpx hands each answer to ``extract_cookies``, which first builds urllib request and
    response stand-ins for the jar: measurable CPU on every relayed call, for nothing.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class PooledClient(httpx.AsyncClient):
    """The shared client, which keeps no cookies.

    It carries every member's calls: a cookie an engine (or agent) sets on one member's
    answer must not ride along on another member's request.
    """

    @property
    def cookies(self) -> httpx.Cookies:
        return _UNKEPT

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        return None  # nothing is kept, whatever is given

    async def open_stream(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: HeaderPairs,
        content: bytes | AsyncIterator[bytes] | None,
        sni_hostname: str | None = None,
    ) -> StreamedAnswer:
        """``send(build_request(...), stream=True)``, straight to the pool.

        It leaves out the steps this client never takes (auth, redirects, cookies, mounts,
        event hooks) and the merging of defaults it does not have: on a relay's hot path
        those were a tenth of the agent's CPU. A plain ``http://`` exchange on the lean
        transport builds no httpx request or response at all. Read the answer with
        ``aiter_raw`` and ``aclose`` it, as a streamed ``send``'s. ``sni_hostname``: the
        name a TLS certificate is checked against when the URL holds an address.
        """
        timeouts = self.timeout.as_dict()
        transport = self._transport
        if isinstance(transport, Http1Transport) and transport.takes(method, url):
            return await transport.open(method, url, headers, content, timeouts)
        extensions: dict[str, object] = {"timeout": timeouts}
        if sni_hostname is not None:
            extensions["sni_hostname"] = sni_hostname
        request = httpx.Request(method, url, headers=headers, content=content, extensions=extensions)
        response = await transport.handle_async_request(request)
        response.request = request
        return response


class AnswerHeaders(Protocol):
    @property
    def raw(self) -> list[tuple[bytes, bytes]]: ...

    def get(self, key: str, default: Any = None) -> Any: ...


class StreamedAnswer(Protocol):
    """What :meth:`PooledClient.open_stream` answers: an ``httpx.Response`` or the lean
    transport's :class:`~inference_club.http1.LeanResponse`."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> AnswerHeaders: ...

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


_UNKEPT = _UnkeptCookies(NoCookies())


def pooled_client(
    *, timeout: httpx.Timeout, limits: httpx.Limits, shards: int = DEFAULT_SHARDS
) -> PooledClient:
    """The process's client: no proxies from the environment, no redirects, no cookies."""
    return PooledClient(
        timeout=timeout,
        transport=pooled_transport(limits=limits, shards=shards),
        follow_redirects=False,
        trust_env=False,
    )
