"""Batches (docs/api.md): up to 256 jobs submitted at once, validated all-or-nothing.

Every item is checked exactly as a direct call would be (fields, and that a provider
serves the model for this user) before anything is written; the batch and all its
jobs are then committed in one transaction. A batch's counts and status are always
computed from its jobs, so retrying or canceling a job shows in its batch at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from inference_club.domain.clock import unix, utcnow
from inference_club.domain.endpoints import BY_NAME, Endpoint
from inference_club.domain.ids import new_id
from inference_club.domain.jobs import (
    MAX_BATCH_ITEMS,
    BatchStatus,
    JobStatus,
    batch_status,
    can_queue,
    inference_type,
    job_endpoint,
    request_fingerprint,
)
from inference_club.errors import Conflict, InvalidRequest, NoProvider, NotFound, TooManyItems
from inference_club.services.auth import Principal
from inference_club.services.jobs import JobService, KeyInUse, check_idempotency_key
from inference_club.services.router import Router
from inference_club.store import jobs as q
from inference_club.store.db import Database
from inference_club.store.tables import Batch, Job

_MAX_LABEL = 255


@dataclass(frozen=True, slots=True)
class BatchItem:
    endpoint: Endpoint
    model: str
    body: dict[str, Any]


def batch_public(batch: Batch, counts: Mapping[str, int]) -> dict[str, Any]:
    return {
        "id": batch.id,
        "object": "batch",
        "label": batch.label,
        "status": batch_status(counts, batch.total).value,
        "total": batch.total,
        "queued": counts.get(JobStatus.QUEUED, 0),
        "processing": counts.get(JobStatus.PROCESSING, 0),
        "processed": counts.get(JobStatus.PROCESSED, 0),
        "failed": counts.get(JobStatus.FAILED, 0),
        "canceled": counts.get(JobStatus.CANCELED, 0),
        "created": unix(batch.created_at),
    }


def _item_error(index: int, exc: InvalidRequest | NoProvider) -> InvalidRequest | NoProvider:
    where = f"requests[{index}]"
    param = f"{where}.body.{exc.param}" if exc.param else f"{where}.body"
    return type(exc)(f"{where}: {exc.message}", param=param)


class BatchService:
    def __init__(self, database: Database, router: Router, jobs: JobService) -> None:
        self._db = database
        self._router = router
        self._jobs = jobs

    def __repr__(self) -> str:
        return "<BatchService>"

    def parse(self, principal: Principal, data: Mapping[str, Any]) -> tuple[str | None, list[BatchItem]]:
        """Validate a ``POST /v1/batches`` body; the first bad item is named in the error."""
        label = data.get("label")
        if label is not None and (not isinstance(label, str) or len(label) > _MAX_LABEL):
            raise InvalidRequest(
                f"'label' must be a string of at most {_MAX_LABEL} characters.", param="label"
            )
        requests = data.get("requests")
        if requests is None:
            raise InvalidRequest("'requests' is required.", param="requests")
        if not isinstance(requests, list):
            raise InvalidRequest("'requests' must be an array of {endpoint, body} objects.", param="requests")
        if not requests:
            raise InvalidRequest("'requests' must hold at least one item.", param="requests")
        if len(requests) > MAX_BATCH_ITEMS:
            raise TooManyItems(
                f"A batch holds at most {MAX_BATCH_ITEMS} requests; this one has {len(requests)}.",
                param="requests",
            )
        return label, [self._item(principal, i, item) for i, item in enumerate(requests)]

    def _item(self, principal: Principal, index: int, item: Any) -> BatchItem:
        where = f"requests[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object with 'endpoint' and 'body'.", param=where)
        named = item.get("endpoint", item.get("url"))
        if not isinstance(named, str):
            raise InvalidRequest(
                f'{where}.endpoint is required (e.g. "/v1/chat/completions").', param=f"{where}.endpoint"
            )
        endpoint = job_endpoint(named)
        if endpoint is None:
            raise InvalidRequest(f"{where}.endpoint: unknown endpoint {named!r}.", param=f"{where}.endpoint")
        if not can_queue(endpoint):
            raise InvalidRequest(
                f"{where}.endpoint: {endpoint.path} takes file uploads and cannot be batched.",
                param=f"{where}.endpoint",
            )
        body = item.get("body")
        if not isinstance(body, dict):
            raise InvalidRequest(f"{where}.body must be a JSON object.", param=f"{where}.body")
        body = {k: v for k, v in body.items() if k != "async"}
        try:
            model = endpoint.validate(body)
            self._router.require_candidates(principal, endpoint, model)
        except (InvalidRequest, NoProvider) as exc:
            raise _item_error(index, exc) from None
        return BatchItem(endpoint, model, body)

    async def create(
        self,
        principal: Principal,
        data: Mapping[str, Any],
        *,
        base_url: str,
        request_id: str,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Validate, then commit the batch and its jobs at once. Returns (batch, replayed)."""
        key = check_idempotency_key(idempotency_key)
        # A replay answers the batch the key names before anything is checked again.
        fingerprint = request_fingerprint(
            "batch", {"label": data.get("label"), "requests": data.get("requests")}
        )
        if key is not None:
            existing = await self._jobs.replay(principal.user_id, key, "batch", fingerprint)
            if existing is not None:
                return await self.get(principal, existing, with_jobs=False), True
        label, items = self.parse(principal, data)
        now = utcnow()
        batch = Batch(
            id=new_id("batch"), user_id=principal.user_id, label=label, total=len(items), created_at=now
        )
        jobs: list[Job] = [
            self._jobs.build(
                principal,
                i.endpoint,
                i.model,
                i.body,
                base_url=base_url,
                request_id=request_id,
                batch_id=batch.id,
                now=now,
            )
            for i in items
        ]
        try:
            async with self._db.transaction() as session:
                if key is not None:
                    await self._jobs.claim_key(
                        session, principal.user_id, key, "batch", fingerprint, batch.id
                    )
                await q.add_batch(session, batch=batch)
                await q.add_jobs(session, jobs=jobs)
        except (IntegrityError, KeyInUse):
            existing = await self._jobs.replay(principal.user_id, key, "batch", fingerprint) if key else None
            if existing is None:
                raise
            return await self.get(principal, existing, with_jobs=False), True
        self._jobs.wake()
        return batch_public(batch, {JobStatus.QUEUED: len(jobs)}), False

    async def get(self, principal: Principal, batch_id: str, *, with_jobs: bool = True) -> dict[str, Any]:
        async with self._db.read() as session:
            batch = await q.get_batch(session, batch_id=batch_id, user_id=principal.user_id)
            if batch is None:
                raise NotFound(f"No batch with id {batch_id!r}.", param="batch_id")
            counts = (await q.batch_counts(session, batch_ids=[batch.id]))[batch.id]
            jobs = list(await q.batch_jobs(session, batch_id=batch.id)) if with_jobs else []
        data = batch_public(batch, counts)
        if with_jobs:
            data["jobs"] = [
                {
                    "id": j.id,
                    "status": j.status,
                    "inference_type": inference_type(BY_NAME[j.endpoint]),
                    "endpoint": BY_NAME[j.endpoint].path,
                    "model": j.model,
                }
                for j in jobs
            ]
        return data

    async def list_batches(
        self, principal: Principal, *, limit: int, after: str | None
    ) -> list[dict[str, Any]]:
        async with self._db.read() as session:
            batches = list(await q.list_batches(session, user_id=principal.user_id, limit=limit, after=after))
            counts = await q.batch_counts(session, batch_ids=[b.id for b in batches])
        return [batch_public(b, counts.get(b.id, {})) for b in batches]

    async def cancel(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        """Cancel every queued or running job of the batch (409 once all have ended)."""
        current = await self.get(principal, batch_id, with_jobs=False)
        if current["status"] == BatchStatus.DONE:
            raise Conflict(f"Batch {batch_id} is DONE; there is nothing left to cancel.")
        async with self._db.read() as session:
            ids = await q.active_ids(session, batch_id=batch_id)
        await self._jobs.cancel_many(ids)
        return await self.get(principal, batch_id, with_jobs=False)
