"""Security headers on every hub response (pure ASGI: streams pass through unbuffered).

The defaults suit an API: nothing the hub answers may be framed, sniffed into another
type, leak its URL as a referrer, or run script. A route that serves a real page
(``/docs``) sets its own Content-Security-Policy, which is then left alone.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"
HSTS = "max-age=31536000"

_DEFAULTS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", DEFAULT_CSP.encode()),
)
_HSTS = (b"strict-transport-security", HSTS.encode())


def came_over_https(scope: Scope) -> bool:
    """The request reached us (or the proxy in front of us) over HTTPS.

    ``X-Forwarded-Proto`` is believed without a trusted-proxy list: the only thing it
    switches on is HSTS, which browsers ignore on plain HTTP anyway.
    """
    if scope.get("scheme") in ("https", "wss"):
        return True
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-proto":
            return bytes(value).split(b",", 1)[0].strip().lower() == b"https"
    return False


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = came_over_https(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # One pass over the names (lower-case, as ASGI sends them) instead of a
                # header lookup per default: this runs on every answer.
                headers = list(message.get("headers", ()))
                present = {bytes(name).lower() for name, _ in headers}
                headers.extend(pair for pair in _DEFAULTS if pair[0] not in present)
                if https and _HSTS[0] not in present:
                    headers.append(_HSTS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
