"""Liveness and readiness.

``/readyz`` names each dependency and whether it answers (the database; Redis when the
hub is scaled out), and never waits longer than the connect timeouts: a hung dependency
is reported, not waited for.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import JSONResponse

from inference_club.errors import DatabaseUnavailable
from inference_club.store.availability import describe
from inference_club.store.db import Database
from inference_club.surfaces.http.deps import HubDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Every dependency answers (503 names the ones that do not).")
async def readyz(hub: HubDep) -> JSONResponse:
    errors: dict[str, str] = {}
    problem = await _database_problem(hub.database)
    if problem is not None:
        errors["database"] = problem
    body: dict[str, object] = {"database": "unavailable" if problem else "ok"}
    if hub.redis is not None:  # a scaled-out hub: the shared live state
        redis_up = await hub.redis.ping()
        body["redis"] = "ok" if redis_up else "unavailable"
        if not redis_up:
            errors["redis"] = "no answer"
    if errors:
        retry_after = hub.database.health.retry_after_s if problem else 2
        body = {"status": "unavailable", **body, "down": list(errors), "errors": errors}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry_after)})
    return JSONResponse({"status": "ok", **body})


async def _database_problem(database: Database) -> str | None:
    # The check runs as its own task: when it outlives the wait it finishes (bounded by
    # the driver's timeouts) in the background instead of being cancelled mid-statement.
    check = asyncio.ensure_future(_select_one(database))
    done, _ = await asyncio.wait({check}, timeout=database.connect_timeout_s)
    if not done:
        check.add_done_callback(_consume)
        return f"no answer within {database.connect_timeout_s:g}s"
    error = check.exception()
    if error is None:
        return None
    if isinstance(error, DatabaseUnavailable):
        return database.health.last_error or "unavailable"
    return describe(error)


async def _select_one(database: Database) -> None:
    async with database.read() as session:
        await session.execute(text("SELECT 1"))


def _consume(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
