"""Jobs and batches as plain data: statuses, the retry policy, fairness order. No I/O.

::

    QUEUED ──claim──▶ PROCESSING ──▶ PROCESSED
      ▲  │                │   │
      │  │ cancel         │   ├──▶ FAILED     (4xx, attempts used up, no provider in time)
      │  ▼                │   └──▶ CANCELED   (cancel aborts the upstream request)
      │ CANCELED          │
      └───────────────────┘  transient failure or expired lease, attempts left:
                             back to QUEUED after an exponential backoff with jitter

``retry`` puts a FAILED or CANCELED job back to QUEUED with its attempts reset.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from inference_club.domain.endpoints import BY_NAME, BY_PATH, BodyKind, Endpoint


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


TERMINAL: frozenset[str] = frozenset({JobStatus.PROCESSED, JobStatus.FAILED, JobStatus.CANCELED})
ACTIVE: frozenset[str] = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})
CANCELABLE = ACTIVE
RETRYABLE: frozenset[str] = frozenset({JobStatus.FAILED, JobStatus.CANCELED})


class BatchStatus(StrEnum):
    PENDING = "PENDING"  # every job still queued
    PROCESSING = "PROCESSING"
    DONE = "DONE"  # every job terminal


MAX_BATCH_ITEMS = 256
MAX_WAIT_S = 60.0
IDEMPOTENCY_TTL_S = 24 * 3600.0


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def batch_status(counts: Mapping[str, int], total: int) -> BatchStatus:
    """A batch's status from its jobs' counts by status."""
    if total <= 0 or sum(counts.get(s, 0) for s in TERMINAL) >= total:
        return BatchStatus.DONE
    if counts.get(JobStatus.QUEUED, 0) >= total:
        return BatchStatus.PENDING
    return BatchStatus.PROCESSING


# --------------------------------------------------------------------------- failures


class FailureKind(StrEnum):
    TRANSIENT = "transient"  # no answer, 5xx, 429, lost lease: retried with backoff
    PERMANENT = "permanent"  # a 4xx other than 429: fails at once
    NOT_AN_ATTEMPT = "not_an_attempt"  # nothing ran (no free slot, no provider right now)


def classify_status(status_code: int | None) -> FailureKind:
    """How a failed attempt counts, from the HTTP status it ended with (None: no answer)."""
    if status_code is None or status_code == 429 or status_code >= 500:
        return FailureKind.TRANSIENT
    if 400 <= status_code < 500:
        return FailureKind.PERMANENT
    return FailureKind.TRANSIENT


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, up to ``max_attempts`` attempts in all.

    The delay before attempt ``n + 1`` (after ``n`` failed attempts) is
    ``min(cap_s, base_s * 2 ** (n - 1))`` scaled by a random factor in ``[1 - jitter, 1]``,
    so retries of many jobs that failed together spread out instead of arriving at once.
    """

    max_attempts: int = 3
    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.5

    def should_retry(self, kind: FailureKind, attempts: int) -> bool:
        if kind is FailureKind.NOT_AN_ATTEMPT:
            return True
        return kind is FailureKind.TRANSIENT and attempts < self.max_attempts

    def delay_s(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts (``attempts >= 1``)."""
        exponent = max(0, attempts - 1)
        ceiling = min(self.cap_s, self.base_s * (2.0 ** min(exponent, 62)))
        factor = 1.0 - self.jitter * (rng or random).random()
        return max(0.0, ceiling * factor)


# --------------------------------------------------------------------------- endpoints


def job_endpoint(value: str) -> Endpoint | None:
    """The endpoint a batch item names: ``/v1/chat/completions``, ``chat/completions``
    or ``chat.completions``. ``None`` for anything else."""
    text = value.strip()
    if text in BY_NAME:
        return BY_NAME[text]
    path = "/" + text.strip("/")
    if not path.startswith("/v1/"):
        path = "/v1" + path
    return BY_PATH.get(path)


def can_queue(endpoint: Endpoint) -> bool:
    """Only JSON bodies can be stored and replayed as jobs."""
    return endpoint.async_capable and endpoint.body in (BodyKind.JSON, BodyKind.JSON_OR_MULTIPART)


def inference_type(endpoint: Endpoint) -> str:
    """The job's ``inference_type``: the service type the endpoint is routed to."""
    return endpoint.service_type.value


# --------------------------------------------------------------------------- idempotency


def request_fingerprint(kind: str, payload: Any) -> str:
    """A stable hash of what a request asks for (key order does not matter)."""
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(kind.encode() + b"\n" + canonical).hexdigest()


# --------------------------------------------------------------------------- fairness


@dataclass(frozen=True, slots=True)
class QueuedRef:
    """What the dispatcher needs to order queued jobs."""

    id: str
    user_id: str
    rank: int  # 1 for the user's oldest queued job, 2 for the next, ...
    endpoint: str = ""
    model: str = ""
    queued_at: datetime | None = None


def fair_order(jobs: Iterable[QueuedRef], last_served: Mapping[str, int]) -> list[QueuedRef]:
    """Interleave users: every user's oldest job before anyone's second one, and among
    equals the user served longest ago first (never served: first of all)."""
    return sorted(jobs, key=lambda j: (j.rank, last_served.get(j.user_id, -1), j.id))
