"""Settings: one typed object, every field also an ``IC_<NAME>`` environment variable.

The CLI and the app factory build a :class:`Settings`; nothing reads the environment
anywhere else. Unsafe defaults are refused outside development (see ``check_safe``).
"""

from __future__ import annotations

import ipaddress
import json
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
    redis_url: str | None = Field(
        None, description="Redis URL for live state when several hub replicas run."
    )
    public_url: str | None = Field(
        None,
        description="Base URL clients reach the hub at, used in file URLs. "
        "Default: taken from each request.",
    )
    secret_key: str | None = Field(
        None,
        description="Signs file share links and dashboard sessions. Required in production; "
        "development derives one from the data dir.",
    )
    log_level: str = Field("info", description="Python log level of the hub.")

    # Routing and providers
    online_window_s: float = Field(60.0, gt=0, description="A provider is online this long after its last heartbeat.")
    heartbeat_interval_s: float = Field(30.0, gt=0, description="Interval the hub asks agents to heartbeat at.")
    queue_timeout_s: float = Field(
        30.0, ge=0, description="How long a synchronous request waits for a free capacity slot before 503 busy."
    )
    failover_attempts: int = Field(2, ge=0, description="Extra providers tried after a failure before the first byte.")
    breaker_failures: int = Field(3, ge=1, description="Consecutive failures that open a provider's circuit breaker.")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="How long an open circuit breaker skips a provider.")
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

    # Limits
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest JSON request body accepted (413 above)."
    )
    max_upload_bytes: int = Field(
        100 * 1024 * 1024, gt=0, description="Largest multipart upload accepted (413 above)."
    )

    rate_limit_rpm: int = Field(
        0,
        ge=0,
        description="Inference requests (sync or async) each API key may make per minute; 0 turns the limit off.",
    )

    # Background work
    key_cache_ttl_s: float = Field(
        5.0, gt=0, description="API keys are re-checked against the database this often (revocation delay)."
    )
    usage_flush_interval_s: float = Field(
        1.0, gt=0, description="How often the usage recorder writes its batch."
    )

    # Jobs and batches
    job_queue_timeout_s: float = Field(
        3600.0, gt=0,
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
        30.0, gt=0,
        description="Lease of a running job, renewed while it runs; a dead hub's jobs are requeued once it expires.",
    )
    job_poll_interval_s: float = Field(
        1.0, gt=0,
        description="The job dispatcher looks at the queue at least this often (it also wakes on events).",
    )
    job_concurrency: int = Field(
        64, ge=1, description="Most jobs one hub process runs at once (provider capacity limits apply too)."
    )
    job_drain_timeout_s: float = Field(
        10.0, ge=0,
        description="On shutdown, running jobs get this long to finish before they are handed back to the queue.",
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
                return "postgresql+asyncpg://" + url[len(plain):]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

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
