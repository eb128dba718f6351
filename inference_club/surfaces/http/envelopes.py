"""The shared answer shapes: the 202 of a new job, batch or run, and the list page of jobs,
batches, workflow runs and files."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def accepted(body: dict[str, Any], location: str, *, replayed: bool) -> JSONResponse:
    """202 with ``Location``; an ``Idempotency-Key`` replay says so in ``idempotent-replayed``."""
    headers = {"location": location}
    if replayed:
        headers["idempotent-replayed"] = "true"
    return JSONResponse(body, status_code=202, headers=headers)


def page(rows: list[Any], limit: int) -> dict[str, Any]:
    """A cursor page of ``rows`` fetched with ``limit + 1``: the extra row only says there is more."""
    data = rows[:limit]
    return {
        "object": "list",
        "data": data,
        "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
