"""Settings: one typed object, every field also an ``IC_<NAME>`` environment variable.

The CLI and the app factory build a :class:`Settings`; nothing reads the environment
anywhere else. Unsafe defaults are refused outside development (see ``check_safe``).
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DENIED_CIDRS = [
    "169.254.0.0/16",  # link-local, incl. cloud metadata 169.254.169.254
    "fe80::/10",
    "100.100.100.200/32",  # Alibaba metadata
    "fd00:ec2::254/128",  # AWS IPv6 metadata
]


class UnsafeSettings(ValueError):
    """A setting that is fine for a laptop but dangerous in production."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IC_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development", description="`production` refuses unsafe defaults."
    )
    host: str = Field("127.0.0.1", description="Address `serve` binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `serve` listens on.")
    data_dir: Path = Field(Path("./data"), description="SQLite file and stored media live here.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default a SQLite file in the data dir. "
        "`postgresql://user@host/db` switches to PostgreSQL (asyncpg).",
    )
    redis_url: str | None = Field(None, description="Redis URL for live state when several hub replicas run.")
    internal_url: str | None = Field(
        None,
        description="Base URL other hub replicas reach this one at (tunnel relay). "
        "Default: `http://<host>:<port>`, the machine's hostname when binding every interface.",
    )
    cluster_secret: str | None = Field(
        None,
        description="Shared secret of the hub replicas; authenticates their calls to each other. "
        "Required with IC_REDIS_URL in production.",
    )
    replica_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="This replica's name in shared state; default `<hostname>-<pid>-<random>` at each start.",
    )
    public_url: str | None = Field(
        None,
        description="Base URL clients reach the hub at, used in file URLs. Default: taken from each request.",
    )
    secret_key: str | None = Field(
        None,
        description="Signs file share links and dashboard sessions. Required in production; "
        "development derives one from the data dir.",
    )
    log_level: str = Field("info", description="Python log level of the hub.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text`: readable lines with `key=value` fields; `json`: one JSON object per line.",
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token that may read `GET /metrics` (an administrator's API key may too).",
        repr=False,
    )
    metrics_refresh_s: float = Field(
        5.0,
        ge=0,
        description="`/metrics` re-reads jobs and workflow runs by status from the database at most this often.",
    )

    # Routing and providers
    online_window_s: float = Field(
        60.0, gt=0, description="A provider is online this long after its last heartbeat."
    )
    heartbeat_interval_s: float = Field(
        30.0, gt=0, description="Interval the hub asks agents to heartbeat at."
    )
    queue_timeout_s: float = Field(
        30.0,
        ge=0,
        description="How long a synchronous request waits for a free capacity slot before 503 busy.",
    )
    failover_attempts: int = Field(
        2, ge=0, description="Extra providers tried after a failure before the first byte."
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failures that open a provider's circuit breaker."
    )
    breaker_cooldown_s: float = Field(
        30.0, gt=0, description="How long an open circuit breaker skips a provider."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Timeout to connect to an agent.")
    upstream_timeout_s: float = Field(
        600.0, gt=0, description="Longest silence from an agent while waiting for or reading an answer (504)."
    )
    callback_allow_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="If set, direct-transport callback URLs must resolve into these networks (comma-separated or JSON list).",
    )
    callback_deny_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_DENIED_CIDRS),
        description="Networks callback URLs may never point into (default link-local and cloud metadata).",
    )
    # Direct-transport callbacks into private networks (security)
    allow_private_callbacks: bool | None = Field(
        None,
        description="Allow direct-transport callback URLs in loopback, private and other non-public networks. "
        "Default: allowed in development, denied in production.",
    )

    # Limits
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest JSON request body accepted (413 above)."
    )
    max_upload_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="Largest multipart upload accepted (413 above)."
    )

    # Engine answers: caps enforced while an answer is read, so a hostile engine cannot exhaust memory or disk
    max_answer_bytes: int = Field(
        1024 * 1024 * 1024,
        gt=0,
        description="Largest engine answer body the hub reads (relayed, stored or parsed); 502 above.",
    )
    max_media_bytes: int = Field(
        512 * 1024 * 1024,
        gt=0,
        description="Largest media file the hub stores from one engine answer; 502 above.",
    )
    max_json_answer_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="Largest JSON the hub holds whole: job results, images/3D answers without their media.",
    )

    rate_limit_rpm: int = Field(
        0,
        ge=0,
        description="Inference requests (sync or async) each API key may make per minute; 0 turns the limit off.",
    )
    rate_limit_tpm: int = Field(
        0,
        ge=0,
        description="Tokens (prompt + completion, as recorded in usage) each API key may use per minute; "
        "0 turns the limit off.",
    )

    # Background work
    key_cache_ttl_s: float = Field(
        5.0, gt=0, description="API keys are re-checked against the database this often (revocation delay)."
    )
    usage_flush_interval_s: float = Field(
        1.0, gt=0, description="How often the usage recorder writes its batch."
    )

    # Database outages: bounded waits, then 503 busy; verified keys ride out the outage
    db_connect_timeout_s: float = Field(
        2.0,
        gt=0,
        description="Longest wait (seconds) to open a database connection or take one from the pool.",
    )
    db_statement_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest wait (seconds) for one database statement (PostgreSQL statement timeout, "
        "SQLite busy timeout).",
    )
    key_cache_grace_s: float = Field(
        300.0,
        ge=0,
        description="While the database is unavailable, keys verified before keep working this long.",
    )

    # Jobs and batches
    job_queue_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="A queued job that finds no online provider for its model this long fails `no_provider`.",
    )
    job_max_attempts: int = Field(
        3, ge=1, le=100, description="Attempts a job gets (transient failures and expired leases count)."
    )
    job_retry_base_s: float = Field(
        1.0, ge=0, description="Backoff before a job's second attempt; doubles per attempt, with jitter."
    )
    job_retry_max_s: float = Field(60.0, ge=0, description="Longest backoff between two attempts of a job.")
    job_lease_s: float = Field(
        30.0,
        gt=0,
        description="Lease of a running job, renewed while it runs; a dead hub's jobs are requeued once it expires.",
    )
    job_poll_interval_s: float = Field(
        1.0,
        gt=0,
        description="The job dispatcher looks at the queue at least this often (it also wakes on events).",
    )
    job_concurrency: int = Field(
        64, ge=1, description="Most jobs one hub process runs at once (provider capacity limits apply too)."
    )
    job_drain_timeout_s: float = Field(
        10.0,
        ge=0,
        description="On shutdown, running jobs get this long to finish before they are handed back to the queue.",
    )

    # Dashboard: sessions, invites, sign-in throttling
    session_ttl_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="How long a dashboard sign-in lasts before the session cookie expires.",
    )
    invite_ttl_s: float = Field(
        72 * 3600.0, gt=0, description="How long a one-time invite link (set your password) stays valid."
    )
    login_max_failures: int = Field(
        10,
        ge=1,
        description="Failed dashboard sign-ins allowed per username and per client address within `IC_LOGIN_LOCKOUT_S`; more are refused (429).",
    )
    login_lockout_s: float = Field(
        900.0,
        gt=0,
        description="Window over which failed sign-ins are counted, and how long a throttled sign-in waits.",
    )

    # Workflows
    workflow_max_steps: int = Field(100, ge=1, le=10_000, description="Most steps a workflow spec may hold.")
    workflow_max_fanout: int = Field(
        64,
        ge=1,
        le=10_000,
        description="Most jobs one map step may start; a longer list fails the step (never truncated).",
    )
    workflow_sweep_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often every running workflow run is re-checked (a safety net; job completions "
        "advance runs at once).",
    )
    # API fidelity: signed media links
    media_url_ttl_s: int = Field(
        3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Lifetime (seconds) of the signed URLs of generated media in inference answers.",
    )

    # S3-compatible object store for files (uploads and generated media); unset = local files
    s3_endpoint: str | None = Field(
        None, description="Base URL of an S3-compatible object store; when set, files are stored there."
    )
    s3_bucket: str | None = Field(
        None, description="Bucket of the object store (required with `IC_S3_ENDPOINT`)."
    )
    s3_region: str = Field("us-east-1", description="Region the object store's requests are signed for.")
    s3_access_key_id: str | None = Field(None, description="Access key id of the object store.")
    s3_secret_access_key: str | None = Field(None, description="Secret access key of the object store.")
    s3_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9._/-]*$", description="Prepended to every object key, e.g. `club/files/`."
    )
    s3_presigned_downloads: bool = Field(
        False,
        description="Answer file downloads with a short-lived presigned redirect to the object store "
        "instead of streaming the bytes through the hub.",
    )

    @field_validator("callback_allow_cidrs", "callback_deny_cidrs", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("callback_allow_cidrs", "callback_deny_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL actually used."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'hub.db').resolve()}"
        url = self.database_url
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        return url

    @property
    def private_callbacks_allowed(self) -> bool:
        if self.allow_private_callbacks is not None:
            return self.allow_private_callbacks
        return self.environment != "production"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    def effective_internal_url(self) -> str:
        """Where other replicas reach this one: ``internal_url``, else built from host and port."""
        if self.internal_url:
            return self.internal_url.rstrip("/")
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def effective_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        return f"development-only:{self.data_dir.resolve()}"

    def check_safe(self) -> None:
        """Refuse development-only defaults in production."""
        if self.environment != "production":
            return
        if not self.secret_key or len(self.secret_key) < 32:
            raise UnsafeSettings(
                "IC_SECRET_KEY must be set to at least 32 random characters when IC_ENVIRONMENT=production"
            )
        if self.redis_url and (not self.cluster_secret or len(self.cluster_secret) < 32):
            raise UnsafeSettings(
                "IC_CLUSTER_SECRET must be set to at least 32 random characters when IC_REDIS_URL is set "
                "and IC_ENVIRONMENT=production"
            )
