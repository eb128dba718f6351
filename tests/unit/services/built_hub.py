"""The hub's services wired as ``build_hub`` wires them, on a migrated SQLite file, not started
(no background loops, no socket, no HTTP client), with a user, their key and one direct
provider registered by heartbeat: for unit tests that drive a service object directly.

Cheap on purpose: the schema is migrated once per test process into a template file that
each test copies, and no HTTP client is built (its TLS setup is the slow part of
``build_hub``); the transports table starts empty.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_club.domain.clock import utcnow
from inference_club.domain.providers import HeartbeatBody, ModelDecl, ServiceDecl
from inference_club.services.accounts import Accounts
from inference_club.services.answers import AnswerLimits
from inference_club.services.auth import KeyAuthenticator, Principal
from inference_club.services.batches import BatchService
from inference_club.services.callback_policy import CallbackPolicy
from inference_club.services.capacity import Capacity, CircuitBreaker
from inference_club.services.dispatcher import Dispatcher
from inference_club.services.executors import Executors
from inference_club.services.files import FileService
from inference_club.services.invites import Invites
from inference_club.services.job_events import JobSignals
from inference_club.services.jobs import JobService
from inference_club.services.progress import ProgressBoard
from inference_club.services.ratelimit import LocalRateLimiter
from inference_club.services.registry import ProviderRegistry
from inference_club.services.revocation import KeyWatch
from inference_club.services.router import Router
from inference_club.services.transports.base import Transports
from inference_club.services.transports.tunnel_server import TunnelServer
from inference_club.services.usage import UsageRecorder
from inference_club.services.workflow_advancer import WorkflowAdvancer
from inference_club.services.workflow_templates import TemplateLibrary
from inference_club.services.workflows import WorkflowService
from inference_club.settings import Settings
from inference_club.store import jobs as q
from inference_club.store.db import Database
from inference_club.store.filestore import LocalFileStore
from inference_club.store.migrate import migrate
from inference_club.store.tables import Job
from tests.conftest import make_settings

#: What the provider ``rig`` serves: an embedding model and a chat model.
SERVICES = [
    ServiceDecl(type="embedding", max_concurrency=2, models=[ModelDecl(id="emb")]),
    ServiceDecl(type="llm", max_concurrency=2, models=[ModelDecl(id="chat")]),
]

_template: Path | None = None


async def _migrated_file() -> Path:
    """A freshly migrated SQLite file, made once per test process."""
    global _template
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="ic-unit-schema-"))
        database = Database(make_settings(folder))
        await migrate(database)
        await database.dispose()
        _template = folder / "hub.db"
    return _template


@dataclass
class Services:
    settings: Settings
    database: Database
    accounts: Accounts
    auth: KeyAuthenticator
    registry: ProviderRegistry
    capacity: Capacity
    transports: Transports
    router: Router
    files: FileService
    usage: UsageRecorder
    limiter: LocalRateLimiter
    signals: JobSignals
    dispatcher: Dispatcher
    jobs: JobService
    batches: BatchService
    invites: Invites
    progress: ProgressBoard
    workflows: WorkflowService
    advancer: WorkflowAdvancer
    tunnels: TunnelServer
    key_watch: KeyWatch

    async def stop(self) -> None:
        await self.dispatcher.stop()
        await self.progress.stop()
        await self.advancer.stop()
        await self.key_watch.stop()
        await self.jobs.poller.stop()
        await self.usage.stop()
        await self.database.dispose()


def wire(settings: Settings) -> Services:
    database = Database(settings)
    accounts = Accounts(database)
    auth = KeyAuthenticator(database, ttl_s=settings.key_cache_ttl_s, grace_s=settings.key_cache_grace_s)
    registry = ProviderRegistry(database, settings, CallbackPolicy.from_settings(settings))
    capacity = Capacity()
    breaker = CircuitBreaker(threshold=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s)
    transports = Transports({})
    router = Router(settings, registry, capacity, breaker, transports)
    files = FileService(database, LocalFileStore(settings.files_dir), secret=settings.effective_secret_key())
    limiter = LocalRateLimiter(rpm=settings.rate_limit_rpm, tpm=settings.rate_limit_tpm)
    usage = UsageRecorder(
        database, auth, interval_s=settings.usage_flush_interval_s, tokens_spent=limiter.spend
    )
    executors = Executors(router, files, usage, AnswerLimits.from_settings(settings))
    signals = JobSignals()
    dispatcher = Dispatcher(
        settings=settings, database=database, router=router, executors=executors, files=files, signals=signals
    )
    jobs = JobService(database, settings, signals, dispatcher)
    progress = ProgressBoard(database, signals)
    templates = TemplateLibrary.load(max_steps=settings.workflow_max_steps)
    workflows = WorkflowService(database, settings, router, jobs, files, templates)
    tunnels = TunnelServer(registry)
    return Services(
        settings=settings,
        database=database,
        accounts=accounts,
        auth=auth,
        registry=registry,
        capacity=capacity,
        transports=transports,
        router=router,
        files=files,
        usage=usage,
        limiter=limiter,
        signals=signals,
        dispatcher=dispatcher,
        jobs=jobs,
        batches=BatchService(database, router, jobs),
        invites=Invites(database, accounts, ttl_s=settings.invite_ttl_s),
        progress=progress,
        workflows=workflows,
        advancer=WorkflowAdvancer(workflows, signals, settings),
        tunnels=tunnels,
        key_watch=KeyWatch(auth, registry, tunnels, interval_s=settings.key_cache_ttl_s / 2),
    )


@dataclass
class Built:
    hub: Services
    principal: Principal

    async def user(self, name: str) -> Principal:
        """Another user, as their key authenticates."""
        await self.hub.accounts.create_user(name)
        return await self.hub.auth.authenticate(f"Bearer {(await self.hub.accounts.create_key(name)).raw}")

    async def job(self, job_id: str) -> Job:
        async with self.hub.database.read() as session:
            job = await q.get_job(session, job_id=job_id, user_id=None)
        assert job is not None
        return job

    async def claim(self, job_id: str) -> Job:
        """Move a queued job to PROCESSING, as a dispatcher claims it."""
        now = utcnow()
        async with self.hub.database.transaction() as session:
            [job] = await q.claim(
                session, job_ids=[job_id], owner="unit", now=now, lease_until=q.lease_until(now, 60)
            )
        return job

    async def finish(
        self,
        job_id: str,
        *,
        status: str = "PROCESSED",
        result: Any = None,
        error: Any = None,
        files: list[Any] | None = None,
    ) -> Job:
        """End a job (claiming it first when still queued) as a dispatcher records it, and
        publish the change."""
        claimed = await self.job(job_id)
        if claimed.status == "QUEUED":
            claimed = await self.claim(job_id)
        async with self.hub.database.transaction() as session:
            job = await q.finish(
                session,
                job_id=job_id,
                owner="unit",
                attempt=claimed.attempts,
                status=status,
                now=utcnow(),
                result=result,
                error=error,
                files=files,
            )
        assert job is not None
        self.hub.signals.publish(job)
        return job


@asynccontextmanager
async def built_hub(tmp_path: Path, **settings: Any) -> AsyncIterator[Built]:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(await _migrated_file(), data / "hub.db")
    services = wire(make_settings(data, None, **settings))
    try:
        await services.accounts.create_user("alice")
        key = (await services.accounts.create_key("alice")).raw
        principal = await services.auth.authenticate(f"Bearer {key}")
        await services.registry.heartbeat(
            principal, HeartbeatBody(name="rig", callback_url="http://127.0.0.1:9", services=SERVICES)
        )
        yield Built(services, principal)
    finally:
        await services.stop()
