"""Signed, expiring links to stored files.

A link carries ``exp`` (Unix seconds) and ``sig`` (hex HMAC-SHA256 of the file id and
``exp`` under the hub's secret key). Whoever holds the link may read that one file until
it expires, without an API key — which is what an ``<img>`` tag in a chat UI needs.
Changing the secret key invalidates every link at once.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

__all__ = ["SignedLink", "UrlSigner"]


@dataclass(frozen=True, slots=True)
class SignedLink:
    exp: int
    sig: str

    def query(self) -> str:
        return urlencode({"exp": self.exp, "sig": self.sig})


class UrlSigner:
    """Signs and checks file links; ``default_ttl_s`` is the lifetime of media URLs."""

    def __init__(self, secret: str, *, default_ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret.encode()
        self.default_ttl_s = default_ttl_s
        self._clock = clock

    def __repr__(self) -> str:
        return f"<UrlSigner ttl={self.default_ttl_s}s>"

    def sign(self, file_id: str, *, ttl_s: int | None = None) -> SignedLink:
        exp = int(self._clock()) + (self.default_ttl_s if ttl_s is None else ttl_s)
        return SignedLink(exp, self._digest(file_id, exp))

    def verify(self, file_id: str, exp: int, sig: str) -> bool:
        """True while the link is unexpired and its signature matches."""
        if exp < self._clock():
            return False
        return hmac.compare_digest(self._digest(file_id, exp), sig)

    def url(self, content_url: str, file_id: str, *, ttl_s: int | None = None) -> str:
        """``content_url`` (the file's ``/content`` URL) with a fresh signature appended."""
        return f"{content_url}?{self.sign(file_id, ttl_s=ttl_s).query()}"

    def _digest(self, file_id: str, exp: int) -> str:
        return hmac.new(self._secret, f"{file_id}\n{exp}".encode(), hashlib.sha256).hexdigest()
