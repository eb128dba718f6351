"""Dashboard sessions: signed cookies, CSRF tokens and sign-in throttling.

A session is a cookie the hub signs (HMAC-SHA256 with the secret key) holding the user
id, an expiry, a random nonce and a fingerprint of the user's password hash, so setting
a new password ends every older session. Nothing is stored server-side; signing out
clears the cookie. CSRF tokens are derived from the session's nonce (or, before sign-in,
from a random cookie), so a page from another origin can neither read nor forge one.
Sessions are for the dashboard only: they never authorize ``/v1/*``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass

import orjson

SESSION_COOKIE = "ic_session"
ANONYMOUS_COOKIE = "ic_csrf"  # anchors the CSRF token of the sign-in and invite forms
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    expires: int
    nonce: str
    password_fingerprint: str


def password_fingerprint(password_hash: str | None) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


class SessionSigner:
    def __init__(self, secret: str, *, ttl_s: float) -> None:
        self._key = hashlib.sha256(b"dashboard-session:" + secret.encode()).digest()
        self.ttl_s = ttl_s

    def issue(
        self, user_id: str, password_hash: str | None, *, now: float | None = None
    ) -> tuple[str, Session]:
        session = Session(
            user_id=user_id,
            expires=int((time.time() if now is None else now) + self.ttl_s),
            nonce=secrets.token_urlsafe(16),
            password_fingerprint=password_fingerprint(password_hash),
        )
        payload = orjson.dumps(
            {
                "u": session.user_id,
                "e": session.expires,
                "n": session.nonce,
                "p": session.password_fingerprint,
            }
        )
        encoded = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{encoded}.{self._sign(encoded)}", session

    def read(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None when it is missing, forged or expired."""
        if not cookie or len(cookie) > 1024 or "." not in cookie:
            return None
        encoded, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(self._sign(encoded), signature):
            return None
        try:
            data = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            session = Session(str(data["u"]), int(data["e"]), str(data["n"]), str(data["p"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def csrf_token(self, anchor: str) -> str:
        """The CSRF token bound to a session nonce (or an anonymous cookie's value)."""
        return self._sign("csrf:" + anchor)[:43]

    def check_csrf(self, anchor: str | None, token: str | None) -> bool:
        if not anchor or not token:
            return False
        return hmac.compare_digest(self.csrf_token(anchor), token)

    def _sign(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class LoginThrottle:
    """Counts failed sign-ins per username and per client address in a sliding window.

    In-process: with several hub replicas each counts its own share.
    """

    def __init__(self, *, max_failures: int, window_s: float, max_tracked: int = 100_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_tracked = max_tracked
        self._failures: dict[str, deque[float]] = {}

    def __repr__(self) -> str:
        return f"<LoginThrottle tracked={len(self._failures)} max={self.max_failures}/{self.window_s}s>"

    def retry_after(self, username: str, address: str, *, now: float | None = None) -> float:
        """Seconds until a sign-in may be tried again; 0 when it may be tried now."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        for key in (f"user:{username.lower()}", f"addr:{address}"):
            times = self._recent(key, now)
            if len(times) >= self.max_failures:
                wait = max(wait, times[0] + self.window_s - now)
        return wait

    def failed(self, username: str, address: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) >= self._max_tracked:
            self._failures.clear()  # a flood of distinct names: forget rather than grow without bound
        for key in (f"user:{username.lower()}", f"addr:{address}"):
            times = self._failures.setdefault(key, deque(maxlen=self.max_failures))
            times.append(now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"user:{username.lower()}", None)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] + self.window_s <= now:
            times.popleft()
        if not times:
            del self._failures[key]
        return times
