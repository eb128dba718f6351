"""Workflow runs: create, read, watch, cancel, approve/reject gates, rerun steps, advance.

A run and its steps are rows; provider-backed steps run as ordinary jobs through the
dispatcher. Every change happens in one transaction holding the run's lock
(:func:`~inference_club.store.workflows.lock_run`) and ends with an advance pass
(:mod:`.workflow_engine`), so the database always says exactly where a run stands and
a restarted hub simply carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from inference_club.domain.clock import as_utc, unix, utcnow
from inference_club.domain.endpoints import Endpoint
from inference_club.domain.ids import new_id
from inference_club.domain.jobs import ACTIVE, MAX_WAIT_S, request_fingerprint
from inference_club.domain.workflow_inputs import clean_inputs
from inference_club.domain.workflow_spec import (
    RUN_TERMINAL,
    STEP_TERMINAL,
    RunStatus,
    StepKind,
    StepStatus,
    WorkflowSpec,
    validate_spec,
)
from inference_club.errors import Conflict, InvalidRequest, NotFound, ServicesUnavailable
from inference_club.services.auth import Principal
from inference_club.services.files import FileService
from inference_club.services.job_events import job_public
from inference_club.services.jobs import JobService, KeyInUse, check_idempotency_key
from inference_club.services.model_catalog import reachable_providers
from inference_club.services.registry import ProviderRegistry
from inference_club.services.router import Router
from inference_club.services.workflow_engine import (
    Engine,
    Pass,
    can_move,
    gate_output,
    load_pass,
    run_event,
    run_spec,
)
from inference_club.services.workflow_templates import TemplateLibrary
from inference_club.settings import Settings
from inference_club.store import jobs as jq
from inference_club.store import workflows as wq
from inference_club.store.db import Database
from inference_club.store.tables import Job, WorkflowRun, WorkflowStep
from inference_club.waiting import wait_event

_POLL_S = 1.0
_KEEPALIVE_S = 15.0
_MAX_NAME = 255
_EVENT_PAGE = 200

#: Sentinel: approve without an ``edit``.
NO_EDIT: Any = object()


# --------------------------------------------------------------------------- public shapes


def _seconds(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    return round((as_utc(end) - as_utc(start)).total_seconds(), 3)


def run_summary(run: WorkflowRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "object": "workflow.run",
        "name": run.name,
        "template": run.template,
        "status": run.status,
        "error": run.error,
        "step_count": len(run.spec.get("steps", [])),
        "created": unix(run.created_at),
        "started_at": unix(run.started_at),
        "finished_at": unix(run.finished_at),
    }


def run_public(
    run: WorkflowRun, rows: Sequence[WorkflowStep], jobs: Sequence[tuple[Any, Job]], spec: WorkflowSpec
) -> dict[str, Any]:
    by_step: dict[str, list[Job]] = {}
    files: list[dict[str, Any]] = []
    for link, job in jobs:
        row = next((r for r in rows if r.step_id == link.step_id), None)
        if row is not None and link.attempt == row.attempt:
            by_step.setdefault(link.step_id, []).append(job)
        for item in job.files or []:
            files.append({**item, "step_id": link.step_id, "job_id": job.id, "item_index": link.item_index})
    steps = []
    for row in rows:
        step = spec.by_id.get(row.step_id)
        steps.append(
            {
                "id": row.step_id,
                "kind": row.kind,
                "title": step.title if step else row.step_id,
                "type": step.raw.get("type") if step else None,
                "endpoint": step.endpoint.path if step and step.endpoint else None,
                "model": step.model if step else None,
                "depends_on": list(step.needs) if step else [],
                "position": row.position,
                "status": row.status,
                "attempt": row.attempt,
                "output": row.output,
                "error": row.error,
                "started_at": unix(row.started_at),
                "finished_at": unix(row.finished_at),
                "timings": {"run_s": _seconds(row.started_at, row.finished_at)},
                "jobs": [job_public(j, with_result=False) for j in by_step.get(row.step_id, [])],
            }
        )
    data = run_summary(run)
    data.update(
        {
            "inputs": run.inputs,
            "context": {
                "inputs": run.inputs,
                "steps": {r.step_id: {"output": r.output} for r in rows if r.status == StepStatus.DONE},
            },
            "steps": steps,
            "edges": spec.edges(),
            "files": files,
            "timings": {"run_s": _seconds(run.started_at, run.finished_at)},
        }
    )
    return data


# --------------------------------------------------------------------------- signals


class WorkflowSignals:
    """In-process wake-ups for whoever watches a run (waiters, event streams)."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._listeners: list[Callable[[str], None]] = []

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with every run changed in this process (it must not block)."""
        self._listeners.append(listener)

    def __repr__(self) -> str:
        return f"<WorkflowSignals watched={len(self._watchers)}>"

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._watchers.setdefault(run_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(run_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[run_id]

    def publish(self, run_id: str) -> None:
        for listener in self._listeners:
            listener(run_id)
        self.wake(run_id)

    def wake(self, run_id: str) -> None:
        """Wake this process's watchers of ``run_id`` only (a change another replica made)."""
        for event in self._watchers.get(run_id, ()):
            event.set()

    def wake_all(self) -> None:
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()


@dataclass(slots=True)
class _Locked:
    session: AsyncSession
    state: Pass


# --------------------------------------------------------------------------- the service


class WorkflowService:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        router: Router,
        jobs: JobService,
        files: FileService,
        templates: TemplateLibrary,
    ) -> None:
        self._db = database
        self._settings = settings
        self._router = router
        self._registry: ProviderRegistry = router.registry
        self._jobs = jobs
        self.templates = templates
        self.signals = WorkflowSignals()
        self.engine = Engine(settings, jobs, files)

    def __repr__(self) -> str:
        return f"<WorkflowService templates={len(self.templates.all())}>"

    # Creating ----------------------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        data: dict[str, Any],
        *,
        base_url: str,
        request_id: str,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Validate, resolve models, commit the run and its first steps' jobs. 202 body + replayed."""
        key = check_idempotency_key(idempotency_key)
        fingerprint = request_fingerprint("run", data)
        if key is not None:
            existing = await self._jobs.replay(principal.user_id, key, "run", fingerprint)
            if existing is not None:
                return await self.get(principal.user_id, existing), True
        name, template_key, spec, inputs = self._parse(data)
        spec = self._resolve_models(principal, spec)
        now = utcnow()
        run = WorkflowRun(
            id=new_id("run"),
            user_id=principal.user_id,
            key_id=principal.key_id or None,
            name=name,
            template=template_key,
            spec=spec.to_json(),
            inputs=inputs,
            status=RunStatus.RUNNING,
            error=None,
            base_url=base_url,
            event_seq=0,
            created_at=now,
            started_at=now,
            finished_at=None,
        )
        rows = [
            WorkflowStep(
                run_id=run.id,
                step_id=s.id,
                position=s.position,
                kind=s.kind.value,
                status=StepStatus.PENDING,
                attempt=1,
            )
            for s in spec.steps
        ]
        try:
            async with self._db.transaction() as session:
                if key is not None:
                    await self._jobs.claim_key(session, principal.user_id, key, "run", fingerprint, run.id)
                await wq.add_run(session, run=run, steps=rows)
                await wq.add_event(session, run=run, data=run_event(run), now=now)
                state = Pass(run, spec, {r.step_id: r for r in rows}, {})
                await self.engine.advance(session, state)
        except (IntegrityError, KeyInUse):
            existing = await self._jobs.replay(principal.user_id, key, "run", fingerprint) if key else None
            if existing is None:
                raise
            return await self.get(principal.user_id, existing), True
        self._after(run.id, state)
        return await self.get(principal.user_id, run.id), False

    def _parse(self, data: dict[str, Any]) -> tuple[str | None, str | None, WorkflowSpec, dict[str, Any]]:
        name = data.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > _MAX_NAME):
            raise InvalidRequest(f"'name' must be a string of at most {_MAX_NAME} characters.", param="name")
        unknown = set(data) - {"name", "template", "spec", "inputs"}
        if unknown:
            raise InvalidRequest(
                f"Unknown field {sorted(unknown)[0]!r}; a run takes template or spec, inputs, name.",
                param=sorted(unknown)[0],
            )
        template_key, raw_spec = data.get("template"), data.get("spec")
        if (template_key is None) == (raw_spec is None):
            raise InvalidRequest(
                "Give either 'template' (a template key) or 'spec' (a workflow spec).", param="template"
            )
        if template_key is not None:
            if not isinstance(template_key, str):
                raise InvalidRequest("'template' must be a template key.", param="template")
            template = self.templates.get(template_key)
            if template is None:
                raise NotFound(
                    f"No workflow template {template_key!r}; GET /v1/workflows/templates lists them.",
                    param="template",
                )
            inputs = clean_inputs(template.inputs, data.get("inputs"))
            return name or template.title, template_key, template.parsed, inputs
        spec = validate_spec(raw_spec, max_steps=self._settings.workflow_max_steps)
        given = data.get("inputs")
        if given is not None and not isinstance(given, dict):
            raise InvalidRequest("'inputs' must be an object.", param="inputs")
        return name, None, spec, given or {}

    def _resolve_models(self, principal: Principal, spec: WorkflowSpec) -> WorkflowSpec:
        """Pick a reachable model for each job step naming none; 409 listing what is missing."""
        models: dict[str, str] = {}
        missing: list[str] = []
        for step in spec.steps:
            if step.endpoint is None:
                continue
            label = step.raw.get("type") or step.endpoint.path
            if step.model is None:
                found = self.model_for(principal, step.endpoint)
                if found is None:
                    missing.append(str(label))
                else:
                    models[step.id] = found
            elif "{{" not in step.model and not self._router.candidates(principal, step.endpoint, step.model):
                missing.append(f"{label} (model {step.model!r})")
        if missing:
            unique = list(dict.fromkeys(missing))
            raise ServicesUnavailable(
                f"No online provider you can use serves: {', '.join(unique)}. Nothing was created.",
                missing=unique,
            )
        return spec.with_models(models)

    def model_for(self, principal: Principal, endpoint: Endpoint) -> str | None:
        """A model the caller can reach for ``endpoint``: their own providers first."""
        providers = reachable_providers(
            self._registry.all(), principal, now=time.time(), online_window_s=self._settings.online_window_s
        )
        for provider in providers:
            for service in provider.services:
                if service.type != endpoint.service_type:
                    continue
                for model in service.models.values():
                    if endpoint.required_feature is None or endpoint.required_feature in model.features:
                        return model.id
        return None

    # Reading -----------------------------------------------------------------------------

    async def get(self, user_id: str, run_id: str, *, wait_s: float = 0.0) -> dict[str, Any]:
        """The run; with ``wait_s`` it returns once the run ends or waits at a gate."""
        deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
        with self.signals.watch(run_id) as changed:
            while True:
                changed.clear()
                async with self._db.read() as session:
                    run = await wq.get_run(session, run_id=run_id, user_id=user_id)
                    if run is None:
                        raise NotFound(f"No workflow run with id {run_id!r}.", param="run_id")
                    remaining = deadline - time.monotonic()
                    if run.status in RUN_TERMINAL or run.status == RunStatus.AWAITING or remaining <= 0:
                        rows = await wq.steps(session, run_id=run.id)
                        jobs = await wq.step_jobs(session, run_id=run.id)
                        return run_public(run, rows, jobs, run_spec(run, self._settings))
                await wait_event(changed, min(remaining, _POLL_S))

    async def require_run(self, user_id: str, run_id: str) -> None:
        async with self._db.read() as session:
            if await wq.get_run(session, run_id=run_id, user_id=user_id) is None:
                raise NotFound(f"No workflow run with id {run_id!r}.", param="run_id")

    async def list_runs(
        self, user_id: str, *, statuses: Sequence[str], limit: int, after: str | None
    ) -> list[dict[str, Any]]:
        unknown = [s for s in statuses if s not in RunStatus.__members__]
        if unknown:
            raise InvalidRequest(
                f"Unknown status {unknown[0]!r}; one of {', '.join(RunStatus)}.", param="status"
            )
        async with self._db.read() as session:
            runs = await wq.list_runs(session, user_id=user_id, statuses=statuses, limit=limit, after=after)
        return [run_summary(r) for r in runs]

    async def events(
        self, user_id: str, run_id: str, *, after: int = 0
    ) -> AsyncGenerator[dict[str, Any] | None, None]:
        """The run's events with ``seq > after``, then new ones as they happen; ends after the
        run reaches a final status. ``None`` items are keep-alive ticks."""
        seq = max(0, after)
        quiet = 0.0
        with self.signals.watch(run_id) as changed:
            while True:
                changed.clear()
                async with self._db.read() as session:
                    found = await wq.events_after(session, run_id=run_id, seq=seq, limit=_EVENT_PAGE)
                    run = await wq.get_run(session, run_id=run_id, user_id=user_id)
                for event in found:
                    seq = event.seq
                    quiet = 0.0
                    yield event.data
                if len(found) == _EVENT_PAGE:
                    continue
                if run is None or (run.status in RUN_TERMINAL and seq >= run.event_seq):
                    return
                if not await wait_event(changed, _POLL_S):
                    quiet += _POLL_S
                    if quiet >= _KEEPALIVE_S:
                        quiet = 0.0
                        yield None

    # Changing ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _locked(self, run_id: str, user_id: str | None) -> AsyncIterator[_Locked]:
        async with self._db.transaction() as session:
            run = await wq.lock_run(session, run_id=run_id, user_id=user_id)
            if run is None:
                raise NotFound(f"No workflow run with id {run_id!r}.", param="run_id")
            yield _Locked(session, await load_pass(session, run, self._settings))

    async def advance(self, run_id: str) -> bool:
        """One idempotent pass over the run; True if anything changed.

        A read-only look first: most job completions of a wide map change nothing (other
        jobs of the step still run), and those need no write transaction. Whatever
        changes after the look marks the run again, so skipping is safe.
        """
        async with self._db.read() as session:
            run = await wq.get_run(session, run_id=run_id, user_id=None)
            if run is None:
                raise NotFound(f"No workflow run with id {run_id!r}.", param="run_id")
            if run.status in RUN_TERMINAL or not can_move(await load_pass(session, run, self._settings)):
                return False
        async with self._locked(run_id, None) as locked:
            await self.engine.advance(locked.session, locked.state)
        self._after(run_id, locked.state)
        return bool(locked.state.events)

    async def cancel(self, user_id: str, run_id: str) -> dict[str, Any]:
        async with self._locked(run_id, user_id) as locked:
            state = locked.state
            if state.run.status in RUN_TERMINAL:
                raise Conflict(
                    f"Run {run_id} is {state.run.status}; only a RUNNING or AWAITING run can be canceled."
                )
            canceled = await self._stop_steps(locked, [s.id for s in state.spec.steps])
            state.set_run(RunStatus.CANCELED, {"message": "Canceled by its owner.", "type": "canceled"})
            await self._write_events(locked)
        self._jobs.canceled(canceled)
        self._after(run_id, state)
        return await self.get(user_id, run_id)

    async def approve(self, user_id: str, run_id: str, step_id: str, edit: Any = NO_EDIT) -> dict[str, Any]:
        async with self._locked(run_id, user_id) as locked:
            state = locked.state
            step, row = self._awaiting_gate(state, step_id)
            output = gate_output(state, step) if edit is NO_EDIT else edit
            state.set_step(row, StepStatus.DONE, output=output)
            await self.engine.advance(locked.session, state)
        self._after(run_id, state)
        return await self.get(user_id, run_id)

    async def reject(self, user_id: str, run_id: str, step_id: str, reason: str | None) -> dict[str, Any]:
        async with self._locked(run_id, user_id) as locked:
            state = locked.state
            _step, row = self._awaiting_gate(state, step_id)
            why = f"Rejected: {reason}" if reason else "Rejected."
            state.set_step(row, StepStatus.FAILED, error={"message": why, "type": "rejected"})
            others = [s.id for s in state.spec.steps if s.id != step_id]
            canceled = await self._stop_steps(locked, others)
            state.set_run(
                RunStatus.FAILED,
                {
                    "message": f"Step {step_id!r} was rejected" + (f": {reason}" if reason else "."),
                    "type": "rejected",
                    "step_id": step_id,
                },
            )
            await self._write_events(locked)
        self._jobs.canceled(canceled)
        self._after(run_id, state)
        return await self.get(user_id, run_id)

    async def rerun(self, user_id: str, run_id: str, step_id: str) -> dict[str, Any]:
        """Run the step and everything after it again; their in-flight jobs are canceled first."""
        async with self._locked(run_id, user_id) as locked:
            state = locked.state
            if step_id not in state.rows:
                raise NotFound(f"Run {run_id} has no step {step_id!r}.", param="step_id")
            row = state.rows[step_id]
            if row.status == StepStatus.PENDING:
                raise Conflict(f"Step {step_id!r} has not run yet; there is nothing to run again.")
            targets = [step_id, *state.spec.descendants(step_id)]
            active = self._active_jobs(state, targets)
            canceled = await self._cancel_jobs(locked.session, active)
            for target in targets:
                target_row = state.rows[target]
                target_row.attempt += 1
                target_row.output = None
                target_row.started_at = None
                target_row.finished_at = None
                state.jobs.pop(target, None)
                state.set_step(target_row, StepStatus.PENDING)
            state.run.finished_at = None
            state.set_run(RunStatus.RUNNING)
            await self.engine.advance(locked.session, state)
        self._jobs.canceled(canceled)
        self._after(run_id, state)
        return await self.get(user_id, run_id)

    # Helpers -----------------------------------------------------------------------------

    def _awaiting_gate(self, state: Pass, step_id: str) -> tuple[Any, WorkflowStep]:
        step = state.spec.by_id.get(step_id)
        if step is None:
            raise NotFound(f"Run {state.run.id} has no step {step_id!r}.", param="step_id")
        row = state.rows[step_id]
        if step.kind is not StepKind.GATE or row.status != StepStatus.AWAITING:
            what = "a gate" if step.kind is StepKind.GATE else f"a {step.kind.value} step, not a gate"
            raise Conflict(
                f"Step {step_id!r} is {what} and {row.status}; only an AWAITING gate can be "
                "approved or rejected."
            )
        if state.run.status in RUN_TERMINAL:
            raise Conflict(f"Run {state.run.id} is {state.run.status}.")
        return step, row

    def _active_jobs(self, state: Pass, step_ids: Sequence[str]) -> list[str]:
        return [ref.job_id for sid in step_ids for ref in state.jobs.get(sid, []) if ref.status in ACTIVE]

    async def _cancel_jobs(self, session: AsyncSession, job_ids: list[str]) -> list[Job]:
        return await jq.cancel(session, job_ids=job_ids, now=utcnow()) if job_ids else []

    async def _stop_steps(self, locked: _Locked, step_ids: Sequence[str]) -> list[Job]:
        """Cancel these steps' queued and running jobs and mark unfinished steps CANCELED."""
        state = locked.state
        canceled = await self._cancel_jobs(locked.session, self._active_jobs(state, step_ids))
        for sid in step_ids:
            row = state.rows[sid]
            if row.status not in STEP_TERMINAL:
                state.set_step(row, StepStatus.CANCELED, error={"message": "Canceled.", "type": "canceled"})
        return canceled

    async def _write_events(self, locked: _Locked) -> None:
        await self.engine.flush(locked.session, locked.state)

    def _after(self, run_id: str, state: Pass) -> None:
        """After commit: wake the dispatcher for new jobs and the run's watchers."""
        if state.new_jobs:
            self._jobs.wake()
        if state.events:
            self.signals.publish(run_id)

    async def run_of_job(self, job_id: str) -> str | None:
        async with self._db.read() as session:
            return await wq.run_of_job(session, job_id=job_id)

    async def active_runs(self, limit: int = 500) -> list[str]:
        async with self._db.read() as session:
            return await wq.run_ids_with_status(session, statuses=[RunStatus.RUNNING], limit=limit)
