"""Dashboard sign-in state, CSRF checks and the headers every dashboard answer carries.

Pages and the dashboard's JSON routes authenticate with the signed session cookie only;
an ``Authorization`` header is ignored here, exactly as the cookie is ignored on ``/v1``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from inference_club.errors import HubError, NotFound
from inference_club.services.auth import Principal
from inference_club.services.container import Hub
from inference_club.services.sessions import (
    ANONYMOUS_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionSigner,
    password_fingerprint,
)
from inference_club.settings import Settings
from inference_club.store.tables import User
from inference_club.surfaces.http.error_handlers import render as render_error

#: Scripts and styles only from the hub itself; media from the hub, ``data:`` (inline
#: generated images) and ``blob:`` (generated speech); no frames, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOGIN_PATH = "/dashboard/login"


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in page, JSON routes answer 401."""


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The dashboard's own parts, built once per app in ``create_app``."""

    signer: SessionSigner
    throttle: LoginThrottle
    templates: jinja2.Environment

    @classmethod
    def build(cls, settings: Settings) -> Dashboard:
        templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(
                str(resources.files("inference_club.surfaces.dashboard") / "templates")
            ),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            enable_async=False,
        )
        return cls(
            signer=SessionSigner(settings.effective_secret_key(), ttl_s=settings.session_ttl_s),
            throttle=LoginThrottle(
                max_failures=settings.login_max_failures, window_s=settings.login_lockout_s
            ),
            templates=templates,
        )


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: User
    session: Session
    csrf: str

    @property
    def principal(self) -> Principal:
        # No key: requests made from the dashboard are the user's own, keyless.
        return Principal(
            user_id=self.user.id,
            username=self.user.username,
            key_id="",
            is_admin=self.user.is_admin,
            routing_preference=self.user.routing_preference,
        )


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _same_origin(request: Request) -> bool:
    """Browsers send ``Origin`` on cross-site POSTs; when present it must be this host."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == (request.headers.get("host") or "").lower()


async def check_csrf(request: Request, anchor: str | None) -> None:
    """State-changing requests carry the token in ``X-CSRF-Token`` or the form field."""
    if request.method in _SAFE_METHODS:
        return
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if not _same_origin(request) or not dashboard_of(request).signer.check_csrf(anchor, token):
        raise HTTPException(403, "CSRF token missing or invalid; reload the page and try again.")


async def signed_in(request: Request) -> SignedIn:
    dashboard = dashboard_of(request)
    session = dashboard.signer.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired()
    try:
        user = await hub_of(request).accounts.get_user(session.user_id)
    except NotFound:
        raise SignInRequired() from None
    if (
        user.disabled_at is not None
        or password_fingerprint(user.password_hash) != session.password_fingerprint
    ):
        raise SignInRequired()
    csrf = dashboard.signer.csrf_token(session.nonce)
    request.state.dashboard_user = user
    request.state.dashboard_csrf = csrf
    await check_csrf(request, session.nonce)
    return SignedIn(user=user, session=session, csrf=csrf)


async def admin_signed_in(request: Request) -> SignedIn:
    me = await signed_in(request)
    if not me.user.is_admin:
        raise NotFound("Not found.")
    return me


SignedInDep = Annotated[SignedIn, Depends(signed_in)]
AdminDep = Annotated[SignedIn, Depends(admin_signed_in)]


def anonymous_anchor(request: Request) -> tuple[str, bool]:
    """The random value the sign-in forms' CSRF token is bound to; True when it is new."""
    current = request.cookies.get(ANONYMOUS_COOKIE)
    if current and 16 <= len(current) <= 64:
        return current, False
    return secrets.token_urlsafe(24), True


def set_anonymous_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        ANONYMOUS_COOKIE, value, httponly=True, samesite="strict", secure=is_https(request), path="/dashboard"
    )


def page(
    request: Request, me: SignedIn, template: str, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A page of a signed-in user (navigation, sign-out form and CSRF token included)."""
    return render(request, template, status_code=status_code, me=me.user, csrf=me.csrf, **context)


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = (
        dashboard_of(request)
        .templates.get_template(template)
        .render(request_path=request.url.path, **context)
    )
    return HTMLResponse(html, status_code=status_code)


def _with_headers(response: Response) -> Response:
    response.headers.setdefault("content-security-policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("cache-control", "no-store")
    response.headers.setdefault("x-content-type-options", "nosniff")
    response.headers.setdefault("referrer-policy", "same-origin")
    return response


def _error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    state = request.scope.get("state", {})
    response = render(
        request,
        "error.html",
        status_code=status,
        status=status,
        message=message,
        me=state.get("dashboard_user"),
        csrf=state.get("dashboard_csrf", ""),
    )
    response.headers.update(headers or {})
    return response


class PageRoute(APIRoute):
    """HTML pages: no session → sign-in page; errors → an HTML error page; strict headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)
            except HubError as exc:
                response = _error_page(request, exc.status_code, exc.message, exc.headers)
            except HTTPException as exc:
                response = _error_page(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))
            return _with_headers(response)

        return handle


class ApiRoute(APIRoute):
    """The dashboard's JSON routes: no session → 401 ``{"detail"}``; strict headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                response = JSONResponse({"detail": "Sign in to the dashboard first."}, status_code=401)
            except HubError as exc:
                response = render_error(exc)
            return _with_headers(response)

        return handle
