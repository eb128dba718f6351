"""Sign-in, sign-out and invite links (set your own password)."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from inference_club.errors import InvalidRequest
from inference_club.services.sessions import ANONYMOUS_COOKIE, SESSION_COOKIE
from inference_club.store.tables import User
from inference_club.surfaces.dashboard.security import (
    LOGIN_PATH,
    PageRoute,
    SignedInDep,
    anonymous_anchor,
    check_csrf,
    dashboard_of,
    hub_of,
    is_https,
    render,
    set_anonymous_cookie,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

_MAX_FIELD = 1024


def _safe_next(target: str | None) -> str:
    """Only a path on this hub (never ``//other.host`` or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    return target


def _anonymous_form(request: Request, template: str, status_code: int = 200, **context: object) -> Response:
    anchor, fresh = anonymous_anchor(request)
    csrf = dashboard_of(request).signer.csrf_token("anon:" + anchor)
    response = render(request, template, status_code=status_code, me=None, csrf=csrf, **context)
    if fresh:
        set_anonymous_cookie(response, request, anchor)
    return response


def _start_session(request: Request, user: User, target: str) -> Response:
    dashboard = dashboard_of(request)
    cookie, _ = dashboard.signer.issue(user.id, user.password_hash)
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(dashboard.signer.ttl_s),
        httponly=True,
        samesite="lax",
        secure=is_https(request),
        path="/",
    )
    return response


async def _check_anonymous_csrf(request: Request) -> None:
    anchor = request.cookies.get(ANONYMOUS_COOKIE)
    await check_csrf(request, "anon:" + anchor if anchor else None)


@router.get(LOGIN_PATH)
async def login_form(request: Request, next: str | None = None) -> Response:
    return _anonymous_form(request, "login.html", next=_safe_next(next), error=None, username="")


@router.post(LOGIN_PATH)
async def login(
    request: Request,
    username: str = Form("", max_length=_MAX_FIELD),
    password: str = Form("", max_length=_MAX_FIELD),
    next: str = Form("/dashboard", max_length=2048),
) -> Response:
    await _check_anonymous_csrf(request)
    dashboard = dashboard_of(request)
    address = request.client.host if request.client else "unknown"
    wait = dashboard.throttle.retry_after(username, address)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        return _anonymous_form(
            request,
            "login.html",
            status_code=429,
            next=_safe_next(next),
            username=username,
            error=f"Too many failed sign-ins. Try again in about {minutes} minute{'s' if minutes > 1 else ''}.",
        )
    user = await hub_of(request).accounts.verify_password(username, password)
    if user is None:
        dashboard.throttle.failed(username, address)
        return _anonymous_form(
            request,
            "login.html",
            status_code=401,
            next=_safe_next(next),
            username=username,
            error="Wrong username or password.",
        )
    dashboard.throttle.succeeded(username)
    return _start_session(request, user, next)


@router.post("/dashboard/logout")
async def logout(me: SignedInDep) -> Response:
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/dashboard/invite/{token}")
async def invite_form(token: str, request: Request) -> Response:
    user = await hub_of(request).invites.peek(token[:_MAX_FIELD])
    return _anonymous_form(request, "invite.html", username=user.username, token=token, error=None)


@router.post("/dashboard/invite/{token}")
async def accept_invite(
    token: str,
    request: Request,
    password: str = Form("", max_length=_MAX_FIELD),
    confirm: str = Form("", max_length=_MAX_FIELD),
) -> Response:
    await _check_anonymous_csrf(request)
    invites = hub_of(request).invites
    user = await invites.peek(token[:_MAX_FIELD])
    error = None
    if password != confirm:
        error = "The two passwords differ."
    else:
        try:
            user = await invites.accept(token, password)
        except InvalidRequest as exc:
            error = exc.message
    if error is not None:
        return _anonymous_form(
            request, "invite.html", status_code=400, username=user.username, token=token, error=error
        )
    return _start_session(request, user, "/dashboard")
