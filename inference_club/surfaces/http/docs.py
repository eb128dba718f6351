"""The API explorer at ``/docs``, served entirely from the package (works offline)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

STATIC_PREFIX = "/docs-static"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="inference-club API",
        swagger_js_url=f"{STATIC_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_PREFIX}/favicon-32x32.png",
        # validatorUrl: None stops Swagger UI from asking validator.swagger.io for a badge.
        swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": True, "validatorUrl": None},
    )


def mount_static(app: FastAPI) -> None:
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(swagger_ui_path)), name="docs-static")
