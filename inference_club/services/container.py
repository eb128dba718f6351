"""The hub's services, built once per app by :func:`build_hub` (no import-time globals)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from inference_club.cluster.replica import make_replica_id
from inference_club.netpool import pooled_client
from inference_club.services.accounts import Accounts
from inference_club.services.answers import AnswerLimits
from inference_club.services.auth import KeyAuthenticator
from inference_club.services.batches import BatchService
from inference_club.services.callback_policy import CallbackPolicy
from inference_club.services.capacity import Capacity, CircuitBreaker, SlotPool
from inference_club.services.dispatcher import Dispatcher
from inference_club.services.executors import Executors
from inference_club.services.files import FileService, Presigner
from inference_club.services.invites import Invites
from inference_club.services.job_events import JobSignals
from inference_club.services.jobs import JobService
from inference_club.services.progress import ProgressBoard
from inference_club.services.ratelimit import LocalRateLimiter, RateLimiter
from inference_club.services.registry import ProviderRegistry
from inference_club.services.revocation import KeyWatch
from inference_club.services.router import Router
from inference_club.services.transports.base import Transports
from inference_club.services.transports.direct import DirectTransport
from inference_club.services.transports.tunnel import TunnelTransport
from inference_club.services.transports.tunnel_server import TunnelServer
from inference_club.services.usage import UsageRecorder
from inference_club.services.usage_report import UsageReports
from inference_club.services.workflow_advancer import WorkflowAdvancer
from inference_club.services.workflow_templates import TemplateLibrary
from inference_club.services.workflows import WorkflowService
from inference_club.settings import Settings
from inference_club.store.db import Database
from inference_club.store.filestore import FileStore, LocalFileStore
from inference_club.store.migrate import migrate

if TYPE_CHECKING:  # the embedded hub never imports the Redis client
    from inference_club.cluster.capacity import RedisCapacity
    from inference_club.cluster.events import ClusterEvents
    from inference_club.cluster.presence import Presence
    from inference_club.cluster.redis_link import RedisLink
    from inference_club.cluster.tunnel_directory import TunnelDirectory

log = logging.getLogger("inference_club")


@dataclass(slots=True)
class Hub:
    settings: Settings
    database: Database
    http: httpx.AsyncClient
    accounts: Accounts
    auth: KeyAuthenticator
    registry: ProviderRegistry
    capacity: SlotPool
    breaker: CircuitBreaker
    transports: Transports
    router: Router
    files: FileService
    usage: UsageRecorder
    limiter: RateLimiter
    executors: Executors
    dispatcher: Dispatcher
    jobs: JobService
    batches: BatchService
    invites: Invites
    usage_reports: UsageReports
    progress: ProgressBoard
    workflows: WorkflowService
    advancer: WorkflowAdvancer
    key_watch: KeyWatch
    replica_id: str = ""
    redis: RedisLink | None = None
    tunnel_directory: TunnelDirectory | None = None
    presence: Presence | None = None
    shared_capacity: RedisCapacity | None = None  # the same object as ``capacity`` when set
    events: ClusterEvents | None = None

    async def start(self) -> None:
        await migrate(self.database)
        await self.registry.load()
        if self.shared_capacity is not None:
            await self.shared_capacity.start()
        if self.presence is not None:
            await self.presence.start()
        self.usage.start()
        self.key_watch.start()
        if self.events is not None:
            await self.events.start()
        await self.dispatcher.start()
        await self.advancer.start()
        if self.tunnel_directory is not None:
            self.tunnel_directory.start()

    async def stop(self) -> None:
        await self.dispatcher.stop()  # drains running jobs while transports still work
        await self.progress.stop()
        await self.advancer.stop()
        await self.key_watch.stop()
        await self.jobs.poller.stop()
        await self.usage.stop()
        if self.events is not None:
            await self.events.stop()
        await self.limiter.aclose()
        if self.tunnel_directory is not None:
            await self.tunnel_directory.stop()  # other replicas stop relaying here first
        await self.transports.aclose()
        if self.presence is not None:
            await self.presence.stop()
        if self.shared_capacity is not None:
            await self.shared_capacity.stop()
        if self.redis is not None:
            await self.redis.aclose()
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
    auth = KeyAuthenticator(database, ttl_s=settings.key_cache_ttl_s, grace_s=settings.key_cache_grace_s)
    callback_policy = CallbackPolicy.from_settings(settings)
    registry = ProviderRegistry(database, settings, callback_policy)
    replica_id = make_replica_id(settings.replica_id)
    redis: RedisLink | None = None
    presence: Presence | None = None
    shared_capacity: RedisCapacity | None = None
    capacity: SlotPool
    if settings.redis_url:
        # Imported here: only a scaled-out hub loads the Redis client.
        from inference_club.cluster.capacity import RedisCapacity
        from inference_club.cluster.presence import Presence
        from inference_club.cluster.redis_link import RedisLink

        redis = RedisLink(settings.redis_url)
        capacity = shared_capacity = RedisCapacity(redis)
        presence = Presence(redis, registry, replica_id=replica_id, online_window_s=settings.online_window_s)
    else:
        capacity = Capacity()
    breaker = CircuitBreaker(threshold=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s)
    tunnels = TunnelServer(registry, heartbeat_interval_s=settings.heartbeat_interval_s)
    tunnel = TunnelTransport(tunnels, upstream_timeout_s=settings.upstream_timeout_s)
    transports = Transports({"direct": DirectTransport(http, callback_policy), "tunnel": tunnel})
    directory: TunnelDirectory | None = None
    if redis is not None:
        directory = _relay_tunnels(settings, redis, http, replica_id, registry, tunnels, tunnel)
    if presence is not None and directory is not None:
        # Tunnel records are announced only once the directory lists this replica as holder.
        presence.claim_tunnels = directory.claim_all
    router = Router(settings, registry, capacity, breaker, transports)
    files = _file_service(settings, database, http)
    limiter = _rate_limiter(settings, redis)
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
    tunnels.on_progress = progress.report
    # Templates are validated here, so a broken one stops the hub at start-up.
    templates = TemplateLibrary.load(max_steps=settings.workflow_max_steps)
    workflows = WorkflowService(database, settings, router, jobs, files, templates)
    # Half the cache TTL: a revoked key's tunnels close no later than its cache entry expires.
    key_watch = KeyWatch(auth, registry, tunnels, interval_s=settings.key_cache_ttl_s / 2)
    events = None
    if redis is not None:
        from inference_club.cluster.events import ClusterEvents

        events = ClusterEvents(
            redis,
            database=database,
            key_watch=key_watch,
            jobs=jobs,
            job_signals=signals,
            run_signals=workflows.signals,
        )
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
        limiter=limiter,
        executors=executors,
        dispatcher=dispatcher,
        jobs=jobs,
        batches=BatchService(database, router, jobs),
        invites=Invites(database, accounts, ttl_s=settings.invite_ttl_s),
        usage_reports=UsageReports(database),
        progress=progress,
        workflows=workflows,
        advancer=WorkflowAdvancer(workflows, signals, settings),
        key_watch=key_watch,
        replica_id=replica_id,
        redis=redis,
        tunnel_directory=directory,
        presence=presence,
        shared_capacity=shared_capacity,
        events=events,
    )


def _relay_tunnels(
    settings: Settings,
    redis: RedisLink,
    http: httpx.AsyncClient,
    replica_id: str,
    registry: ProviderRegistry,
    tunnels: TunnelServer,
    transport: TunnelTransport,
) -> TunnelDirectory | None:
    """Advertise the tunnels held here, and relay to the replica holding a tunnel held elsewhere."""
    if not settings.cluster_secret:
        log.warning(
            "IC_REDIS_URL is set without IC_CLUSTER_SECRET: requests are not relayed to agent tunnels "
            "held by other replicas"
        )
        return None
    from inference_club.cluster.relay import ClusterSigner, RelayClient
    from inference_club.cluster.tunnel_directory import TunnelDirectory

    directory = TunnelDirectory(
        redis,
        replica_id=replica_id,
        internal_url=settings.effective_internal_url(),
        held=tunnels.held_provider_ids,
    )
    tunnels.on_holding = directory.holding

    def held_elsewhere(provider_id: str) -> bool:
        """Presence shows a tunnel of the provider on another replica, and none is here."""
        state = registry.get(provider_id)
        return state is not None and bool(state.remote_tunnels) and not transport.holds(provider_id)

    transport.relay = RelayClient(
        http, directory, ClusterSigner(settings.cluster_secret), expect_holder=held_elsewhere
    )
    return directory


def _rate_limiter(settings: Settings, redis: RedisLink | None) -> RateLimiter:
    """Per-key limits in Redis when replicas share it, else in this process."""
    if redis is None:
        return LocalRateLimiter(rpm=settings.rate_limit_rpm, tpm=settings.rate_limit_tpm)
    from inference_club.cluster.ratelimit import SharedRateLimiter

    return SharedRateLimiter(redis, rpm=settings.rate_limit_rpm, tpm=settings.rate_limit_tpm)


def _file_service(settings: Settings, database: Database, http: httpx.AsyncClient) -> FileService:
    """Files on the local disk, or in the S3-compatible store when ``IC_S3_ENDPOINT`` is set."""
    store: FileStore = LocalFileStore(settings.files_dir)
    presigner: Presigner | None = None
    if settings.s3_endpoint:
        from inference_club.store.s3store import s3_store_from  # botocore only loads when used

        s3 = s3_store_from(http, settings)
        store = s3
        if settings.s3_presigned_downloads:

            def presigner(key: str, ttl_s: int, headers: Mapping[str, str]) -> str:
                return s3.presigned_get(key, ttl_s=ttl_s, response_headers=headers)

    return FileService(
        database,
        store,
        secret=settings.effective_secret_key(),
        media_url_ttl_s=settings.media_url_ttl_s,
        presigner=presigner,
    )
