"""The API explorer at ``/docs``, served entirely from the package (works offline)."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC_PREFIX = "/docs-static"
# Swagger UI 5 (it renders OpenAPI 3.1, which FastAPI emits), as shipped inside the
# fastapi-offline wheel: swagger-ui-bundle.js, swagger-ui.css, favicon.png.
SWAGGER_UI_DIR = resources.files("fastapi_offline") / "static"

router = APIRouter(include_in_schema=False)


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def page_csp(html: str) -> str:
    """A policy for the explorer page: its own assets, its inline start-up script by hash,
    calls to this origin only. Framing, plugins and foreign hosts are refused."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    page = _swagger_page()
    page.headers["content-security-policy"] = page_csp(bytes(page.body).decode())
    return page


def _swagger_page() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="inference-club API",
        swagger_js_url=f"{STATIC_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_PREFIX}/favicon.png",
        # validatorUrl: None stops Swagger UI from asking validator.swagger.io for a badge.
        swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": True, "validatorUrl": None},
    )


def mount_static(app: FastAPI) -> None:
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(SWAGGER_UI_DIR)), name="docs-static")
