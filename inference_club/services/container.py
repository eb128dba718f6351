"""The hub's services, built once per app by :func:`build_hub` (no import-time globals)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from inference_club.netpool import pooled_client
from inference_club.services.accounts import Accounts
from inference_club.services.auth import KeyAuthenticator
from inference_club.services.batches import BatchService
from inference_club.services.capacity import Capacity, CircuitBreaker
from inference_club.services.dispatcher import Dispatcher
from inference_club.services.executors import Executors
from inference_club.services.files import FileService
from inference_club.services.jobs import JobService, JobSignals
from inference_club.services.ratelimit import RequestLimiter
from inference_club.services.registry import ProviderRegistry
from inference_club.services.router import Router
from inference_club.services.transports.base import Transports
from inference_club.services.transports.direct import DirectTransport
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.services.usage import UsageRecorder
from inference_club.settings import Settings
from inference_club.store.db import Database
from inference_club.store.filestore import LocalFileStore
from inference_club.store.migrate import migrate

log = logging.getLogger("inference_club")


@dataclass(slots=True)
class Hub:
    settings: Settings
    database: Database
    http: httpx.AsyncClient
    accounts: Accounts
    auth: KeyAuthenticator
    registry: ProviderRegistry
    capacity: Capacity
    breaker: CircuitBreaker
    transports: Transports
    router: Router
    files: FileService
    usage: UsageRecorder
    limiter: RequestLimiter
    executors: Executors
    dispatcher: Dispatcher
    jobs: JobService
    batches: BatchService

    async def start(self) -> None:
        await migrate(self.database)
        await self.registry.load()
        self.usage.start()
        await self.dispatcher.start()

    async def stop(self) -> None:
        await self.dispatcher.stop()  # drains running jobs while transports still work
        await self.usage.stop()
        await self.transports.aclose()
        await self.http.aclose()
        await self.database.dispose()


def build_hub(settings: Settings) -> Hub:
    settings.check_safe()
    database = Database(settings)
    # One pooled client per process for every call to an agent.
    http = pooled_client(
        timeout=httpx.Timeout(settings.upstream_timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
    )
    accounts = Accounts(database)
    auth = KeyAuthenticator(database, ttl_s=settings.key_cache_ttl_s)
    registry = ProviderRegistry(database, settings)
    capacity = Capacity()
    breaker = CircuitBreaker(threshold=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s)
    tunnel = TunnelTransport(
        registry, upstream_timeout_s=settings.upstream_timeout_s, heartbeat_interval_s=settings.heartbeat_interval_s
    )
    transports = Transports({"direct": DirectTransport(http), "tunnel": tunnel})
    router = Router(settings, registry, capacity, breaker, transports)
    files = FileService(database, LocalFileStore(settings.files_dir), secret=settings.effective_secret_key())
    usage = UsageRecorder(database, auth, interval_s=settings.usage_flush_interval_s)
    executors = Executors(router, files, usage)
    signals = JobSignals()
    dispatcher = Dispatcher(
        settings=settings, database=database, router=router, executors=executors, files=files, signals=signals
    )
    jobs = JobService(database, settings, signals, dispatcher)
    return Hub(
        settings=settings,
        database=database,
        http=http,
        accounts=accounts,
        auth=auth,
        registry=registry,
        capacity=capacity,
        breaker=breaker,
        transports=transports,
        router=router,
        files=files,
        usage=usage,
        limiter=RequestLimiter(rpm=settings.rate_limit_rpm),
        executors=executors,
        dispatcher=dispatcher,
        jobs=jobs,
        batches=BatchService(database, router, jobs),
    )
