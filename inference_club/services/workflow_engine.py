"""Advancing a workflow run: one pass, inside the transaction that holds the run's lock.

Idempotent: the pass reads the run, its steps and its jobs as they are and moves only
what can move. Running it twice, or in two hub processes one after the other, changes
nothing the second time. Jobs of a step are inserted in the same transaction that moves
the step to RUNNING, and tagged ``(run, step, attempt, item)`` under a unique key, so a
step attempt's jobs are submitted exactly once even across a ``kill -9``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.domain.clock import utcnow
from inference_club.domain.jobs import TERMINAL, JobStatus
from inference_club.domain.templating import TemplateError, render
from inference_club.domain.workflow_outputs import OutputError, job_body, job_output
from inference_club.domain.workflow_spec import (
    RUN_TERMINAL,
    STEP_BLOCKING,
    RunStatus,
    StepKind,
    StepSpec,
    StepStatus,
    WorkflowSpec,
    validate_spec,
)
from inference_club.domain.workflow_transforms import TransformError, apply
from inference_club.errors import HubError, NotFound
from inference_club.services.auth import Principal
from inference_club.services.files import FileService
from inference_club.services.jobs import JobService
from inference_club.settings import Settings
from inference_club.store import workflows as wq
from inference_club.store.tables import Job, WorkflowJob, WorkflowRun, WorkflowStep


def run_spec(run: WorkflowRun, settings: Settings) -> WorkflowSpec:
    # A stored spec was validated when the run was created; a bigger limit set since is fine.
    return validate_spec(run.spec, max_steps=max(settings.workflow_max_steps, len(run.spec.get("steps", []))))


def job_request_id(run_id: str, step_id: str, attempt: int, index: int) -> str:
    """Tags a step's job; the run id comes first so a job's completion finds its run."""
    return f"{run_id}/{attempt}/{index}/{step_id}"[:64]


def run_id_of(request_id: str) -> str | None:
    head, sep, _ = request_id.partition("/")
    return head if sep and head.startswith("run_") else None


def step_event(run: WorkflowRun, row: WorkflowStep) -> dict[str, Any]:
    return {
        "type": "step",
        "run_id": run.id,
        "step_id": row.step_id,
        "status": row.status,
        "attempt": row.attempt,
        "error": row.error,
        "output": row.output if row.status == StepStatus.DONE else None,
    }


def run_event(run: WorkflowRun) -> dict[str, Any]:
    return {"type": "run", "run_id": run.id, "status": run.status, "error": run.error}


def _error(message: str, error_type: str = "step_failed") -> dict[str, Any]:
    return {"message": message, "type": error_type}


@dataclass(slots=True)
class Pass:
    """What one locked pass over a run found and changed."""

    run: WorkflowRun
    spec: WorkflowSpec
    rows: dict[str, WorkflowStep]
    jobs: dict[str, list[wq.StepJobRef]]  # current attempt's jobs, by step
    now: datetime = field(default_factory=utcnow)
    events: list[dict[str, Any]] = field(default_factory=list)
    new_jobs: list[tuple[Job, WorkflowJob]] = field(default_factory=list)
    written_events: int = 0
    written_jobs: int = 0

    def scope(self) -> dict[str, Any]:
        return {
            "inputs": self.run.inputs,
            "steps": {
                sid: {"output": r.output} for sid, r in self.rows.items() if r.status == StepStatus.DONE
            },
        }

    def set_step(
        self,
        row: WorkflowStep,
        status: StepStatus,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        row.status = status
        if status in (StepStatus.RUNNING, StepStatus.AWAITING) and row.started_at is None:
            row.started_at = self.now
        if status in (StepStatus.DONE, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED):
            row.finished_at = self.now
            if row.started_at is None and status in (StepStatus.DONE, StepStatus.FAILED):
                row.started_at = self.now
        if status == StepStatus.DONE:
            row.output = output
        row.error = error
        self.events.append(step_event(self.run, row))

    def set_run(self, status: RunStatus, error: dict[str, Any] | None = None) -> None:
        if self.run.status == status and self.run.error == error:
            return
        self.run.status = status
        self.run.error = error
        self.run.finished_at = self.now if status in RUN_TERMINAL else None
        self.events.append(run_event(self.run))


async def load_pass(session: AsyncSession, run: WorkflowRun, settings: Settings) -> Pass:
    rows = {row.step_id: row for row in await wq.steps(session, run_id=run.id)}
    jobs: dict[str, list[wq.StepJobRef]] = {}
    for ref in await wq.step_job_refs(session, run_id=run.id):
        row = rows.get(ref.step_id)
        if row is not None and ref.attempt == row.attempt:
            jobs.setdefault(ref.step_id, []).append(ref)
    return Pass(run, run_spec(run, settings), rows, jobs)


def can_move(state: Pass) -> bool:
    """Would a pass change anything? (A step can start, end or be skipped.)"""
    for step in state.spec.steps:
        row = state.rows[step.id]
        if row.status == StepStatus.RUNNING and step.is_job_step:
            refs = state.jobs.get(step.id, [])
            if refs and all(ref.status in TERMINAL for ref in refs):
                return True
        elif row.status == StepStatus.PENDING:
            needs = [state.rows[n].status for n in step.needs]
            if all(n == StepStatus.DONE for n in needs) or any(n in STEP_BLOCKING for n in needs):
                return True
    return False


class Engine:
    def __init__(self, settings: Settings, jobs: JobService, files: FileService) -> None:
        self._settings = settings
        self._jobs = jobs
        self._files = files

    def __repr__(self) -> str:
        return "<WorkflowEngine>"

    async def advance(self, session: AsyncSession, state: Pass) -> None:
        """Move every step that can move, then the run's status; write events and jobs."""
        if state.run.status not in RUN_TERMINAL:
            moved = True
            while moved:
                moved = False
                for step in state.spec.steps:
                    row = state.rows[step.id]
                    if row.status == StepStatus.RUNNING and step.is_job_step:
                        moved |= await self._finish_jobs(session, state, step, row)
                    elif row.status == StepStatus.PENDING:
                        moved |= await self._start(state, step, row)
            self._settle_run(state)
        await self.flush(session, state)

    @staticmethod
    async def flush(session: AsyncSession, state: Pass) -> None:
        """Write the jobs and events the pass made since the last flush."""
        jobs = state.new_jobs[state.written_jobs :]
        if jobs:
            await wq.add_step_jobs(session, jobs=[j for j, _ in jobs], links=[link for _, link in jobs])
            state.written_jobs = len(state.new_jobs)
        for event in state.events[state.written_events :]:
            await wq.add_event(session, run=state.run, data=event, now=state.now)
        state.written_events = len(state.events)

    # Starting ------------------------------------------------------------------------------

    async def _start(self, state: Pass, step: StepSpec, row: WorkflowStep) -> bool:
        needs = [state.rows[n] for n in step.needs]
        blocked = [n for n in needs if n.status in STEP_BLOCKING]
        if blocked:
            state.set_step(
                row,
                StepStatus.SKIPPED,
                error=_error(f"Skipped: step {blocked[0].step_id!r} is {blocked[0].status}.", "skipped"),
            )
            return True
        if any(n.status != StepStatus.DONE for n in needs):
            return False
        try:
            if step.kind is StepKind.GATE:
                state.set_step(row, StepStatus.AWAITING)
            elif step.kind is StepKind.TRANSFORM:
                state.set_step(row, StepStatus.DONE, output=self._transform(state, step))
            elif step.kind is StepKind.COLLECT:
                state.set_step(row, StepStatus.DONE, output=_collect(state, step))
            elif step.kind is StepKind.INFERENCE:
                await self._submit(state, step, row, [(0, {})])
            else:
                await self._start_map(state, step, row)
        except (TemplateError, TransformError, OutputError) as exc:
            state.set_step(row, StepStatus.FAILED, error=_error(f"{step.id}: {exc}"))
        except HubError as exc:
            state.set_step(row, StepStatus.FAILED, error=_error(f"{step.id}: {exc.message}", exc.type))
        return True

    def _transform(self, state: Pass, step: StepSpec) -> Any:
        op = str(step.raw.get("op", "passthrough"))
        scope = state.scope()
        value = render(step.raw["inputs"], scope) if op == "zip" else render(step.raw.get("input"), scope)
        return apply(op, value, step.raw)

    async def _start_map(self, state: Pass, step: StepSpec, row: WorkflowStep) -> None:
        over = render(step.raw["over"], state.scope())
        if isinstance(over, dict) and isinstance(over.get("items"), list):
            over = over["items"]  # an LLM step's JSON list lands in ``items``
        if not isinstance(over, list):
            raise OutputError(f"'over' must give a list; it gave {type(over).__name__}")
        if not over:
            state.set_step(row, StepStatus.DONE, output=[])
            return
        limit = self._settings.workflow_max_fanout
        if len(over) > limit:
            raise OutputError(
                f"'over' gave {len(over)} items, more than the fan-out limit of {limit} "
                "(IC_WORKFLOW_MAX_FANOUT); nothing was submitted"
            )
        await self._submit(state, step, row, [(i, {"item": item, "index": i}) for i, item in enumerate(over)])

    async def _submit(
        self, state: Pass, step: StepSpec, row: WorkflowStep, items: Sequence[tuple[int, dict[str, Any]]]
    ) -> None:
        """Build the step attempt's jobs (all of them, or none if one body is invalid)."""
        endpoint = step.endpoint
        assert endpoint is not None
        base = state.scope()
        built: list[tuple[Job, WorkflowJob]] = []
        run = state.run
        principal = Principal(run.user_id, "", run.key_id or "", False, "own-first")
        for index, extra in items:
            scope = {**base, **extra}
            model = render(step.model, scope) if step.model else None
            if not isinstance(model, str) or not model:
                raise OutputError("no model could be resolved for this step")
            body = render(step.raw.get("body", {}), scope)
            if not isinstance(body, dict):
                raise OutputError("'body' must render to an object")
            for name in step.raw.get("inline_files") or []:
                body[name] = await self._data_uri(run.user_id, body.get(name), name)
            body = job_body(
                endpoint,
                body,
                model,
                schema=step.raw.get("response_schema"),
                schema_name=step.raw.get("schema_name"),
            )
            try:
                endpoint.validate(body)
            except HubError as exc:
                where = f"item {index}: " if step.kind is StepKind.MAP else ""
                raise OutputError(f"{where}invalid request body: {exc.message}") from None
            job = self._jobs.build(
                principal,
                endpoint,
                model,
                body,
                base_url=run.base_url,
                request_id=job_request_id(run.id, step.id, row.attempt, index),
                now=state.now,
            )
            built.append(
                (
                    job,
                    WorkflowJob(
                        job_id=job.id, run_id=run.id, step_id=step.id, attempt=row.attempt, item_index=index
                    ),
                )
            )
        state.new_jobs.extend(built)
        state.set_step(row, StepStatus.RUNNING)

    async def _data_uri(self, user_id: str, value: Any, name: str) -> str:
        """A file of the run's owner (an id, or a step output with ``file_id``) as a data URI."""
        file_id = value.get("file_id") if isinstance(value, dict) else value
        if not isinstance(file_id, str) or not file_id:
            raise OutputError(f"body.{name} must name a file (a file id or an output with file_id)")
        try:
            record = await self._files.get(file_id, user_id=user_id)
        except NotFound:
            raise OutputError(f"body.{name}: no file {file_id!r}") from None
        limit = self._settings.max_body_bytes // 2
        if record.bytes > limit:
            raise OutputError(
                f"body.{name}: file {file_id} is {record.bytes} bytes, more than {limit} can be inlined"
            )
        data = b"".join([chunk async for chunk in self._files.content(record)])
        return f"data:{record.content_type};base64,{base64.b64encode(data).decode()}"

    # Finishing -----------------------------------------------------------------------------

    async def _finish_jobs(
        self, session: AsyncSession, state: Pass, step: StepSpec, row: WorkflowStep
    ) -> bool:
        found = state.jobs.get(step.id, [])
        if not found or any(ref.status not in TERMINAL for ref in found):
            return False
        bad = [ref for ref in found if ref.status != JobStatus.PROCESSED]
        if bad:
            first = bad[0]
            reason = (first.error or {}).get("message") or first.status
            where = f"item {first.item_index}" if step.kind is StepKind.MAP else "its job"
            state.set_step(
                row,
                StepStatus.FAILED,
                error=_error(
                    f"{len(bad)} of {len(found)} job(s) failed or were canceled; {where} ({first.job_id}): {reason}",
                    "job_failed",
                ),
            )
            return True
        endpoint = step.endpoint
        assert endpoint is not None
        # Results are read only now that the step is complete (they can be large).
        jobs = await wq.jobs_by_id(session, job_ids=[ref.job_id for ref in found])
        outputs = []
        try:
            for ref in sorted(found, key=lambda r: r.item_index):
                job = jobs[ref.job_id]
                try:
                    outputs.append(
                        job_output(
                            endpoint,
                            job.result,
                            job.files or [],
                            extract=step.extract_json,
                            schema=step.raw.get("response_schema"),
                        )
                    )
                except OutputError as exc:
                    raise OutputError(
                        f"item {ref.item_index}: {exc}" if step.kind is StepKind.MAP else str(exc)
                    ) from None
        except OutputError as exc:
            state.set_step(row, StepStatus.FAILED, error=_error(f"{step.id}: {exc}", "invalid_output"))
            return True
        state.set_step(row, StepStatus.DONE, output=outputs if step.kind is StepKind.MAP else outputs[0])
        return True

    def _settle_run(self, state: Pass) -> None:
        statuses = [r.status for r in state.rows.values()]
        if StepStatus.RUNNING in statuses or (
            StepStatus.PENDING in statuses and StepStatus.AWAITING not in statuses
        ):
            state.set_run(RunStatus.RUNNING)
        elif StepStatus.AWAITING in statuses:
            state.set_run(RunStatus.AWAITING)
        else:
            failed = [
                r
                for r in sorted(state.rows.values(), key=lambda r: r.position)
                if r.status in (StepStatus.FAILED, StepStatus.CANCELED)
            ]
            if failed:
                first = failed[0]
                message = (first.error or {}).get("message") or first.status
                state.set_run(
                    RunStatus.FAILED,
                    {
                        "message": f"Step {first.step_id!r} {first.status}: {message}",
                        "type": "step_failed",
                        "step_id": first.step_id,
                    },
                )
            else:
                state.set_run(RunStatus.DONE)


def _collect(state: Pass, step: StepSpec) -> Any:
    sources = step.raw["from"]
    if isinstance(sources, str):
        value = state.rows[sources].output
        return value if isinstance(value, list) else [value]
    return {name: state.rows[name].output for name in sources}


def gate_output(state: Pass, step: StepSpec) -> dict[str, Any]:
    """An approved gate without an edit: its dependencies' outputs, by step id."""
    if not step.needs:
        return {"approved": True}
    return {name: state.rows[name].output for name in step.needs}


def scope_of(rows: Mapping[str, WorkflowStep], inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inputs": dict(inputs),
        "steps": {sid: {"output": r.output} for sid, r in rows.items() if r.status == StepStatus.DONE},
    }
