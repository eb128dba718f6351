"""Job statuses, retry policy, batch status, endpoint names, fingerprints, fair order."""

from __future__ import annotations

import random

import pytest

from inference_club.domain.endpoints import BY_NAME
from inference_club.domain.jobs import (
    ACTIVE,
    TERMINAL,
    BatchStatus,
    FailureKind,
    JobStatus,
    QueuedRef,
    RetryPolicy,
    batch_status,
    can_queue,
    classify_status,
    fair_order,
    inference_type,
    is_terminal,
    job_endpoint,
    request_fingerprint,
)


def test_statuses() -> None:
    assert set(JobStatus) == ACTIVE | TERMINAL and not ACTIVE & TERMINAL
    assert is_terminal("PROCESSED") and is_terminal("CANCELED") and not is_terminal("PROCESSING")


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (None, FailureKind.TRANSIENT),
        (500, FailureKind.TRANSIENT),
        (502, FailureKind.TRANSIENT),
        (504, FailureKind.TRANSIENT),
        (429, FailureKind.TRANSIENT),
        (400, FailureKind.PERMANENT),
        (404, FailureKind.PERMANENT),
        (422, FailureKind.PERMANENT),
    ],
)
def test_classify_status(status: int | None, kind: FailureKind) -> None:
    assert classify_status(status) is kind


def test_retry_policy_retries_transient_failures_up_to_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(FailureKind.TRANSIENT, 1)
    assert policy.should_retry(FailureKind.TRANSIENT, 2)
    assert not policy.should_retry(FailureKind.TRANSIENT, 3)
    assert not policy.should_retry(FailureKind.PERMANENT, 1)
    assert policy.should_retry(FailureKind.NOT_AN_ATTEMPT, 99)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=10.0, jitter=0.5)
    rng = random.Random(7)
    for attempts, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0), (10_000, 10.0)):
        delays = [policy.delay_s(attempts, rng) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays), (attempts, min(delays), max(delays))
        assert len(set(delays)) > 100  # jittered, not one value
    assert RetryPolicy(base_s=0.0).delay_s(3) == 0.0
    assert RetryPolicy(jitter=0.0, base_s=2.0).delay_s(2) == 4.0


def test_batch_status() -> None:
    assert batch_status({"QUEUED": 3}, 3) is BatchStatus.PENDING
    assert batch_status({"QUEUED": 2, "PROCESSING": 1}, 3) is BatchStatus.PROCESSING
    assert batch_status({"QUEUED": 2, "PROCESSED": 1}, 3) is BatchStatus.PROCESSING
    assert batch_status({"PROCESSED": 1, "FAILED": 1, "CANCELED": 1}, 3) is BatchStatus.DONE
    assert batch_status({}, 0) is BatchStatus.DONE


def test_job_endpoint_names() -> None:
    chat = BY_NAME["chat.completions"]
    for name in (
        "/v1/chat/completions",
        "v1/chat/completions",
        "chat/completions",
        "/chat/completions/",
        "chat.completions",
        " /v1/chat/completions ",
    ):
        assert job_endpoint(name) is chat, name
    for name in ("", "/v1/nope", "/v2/chat/completions", "chat"):
        assert job_endpoint(name) is None, name


def test_which_endpoints_can_be_queued() -> None:
    queued = {name for name, e in BY_NAME.items() if can_queue(e)}
    assert queued == {
        "chat.completions",
        "completions",
        "responses",
        "embeddings",
        "audio.speech",
        "images.generations",
        "music.generations",
        "videos.generations",
        "3d.generations",
    }
    assert inference_type(BY_NAME["audio.speech"]) == "tts"


def test_request_fingerprint_ignores_key_order() -> None:
    one = request_fingerprint("job", {"endpoint": "embeddings", "body": {"model": "m", "input": ["a"]}})
    two = request_fingerprint("job", {"body": {"input": ["a"], "model": "m"}, "endpoint": "embeddings"})
    assert one == two
    assert one != request_fingerprint(
        "job", {"endpoint": "embeddings", "body": {"model": "m", "input": ["b"]}}
    )
    assert one != request_fingerprint(
        "batch", {"endpoint": "embeddings", "body": {"model": "m", "input": ["a"]}}
    )


def test_fair_order_interleaves_users_and_favours_the_one_served_longest_ago() -> None:
    queued = [QueuedRef(f"job_a{i}", "alice", i + 1) for i in range(3)]
    queued += [QueuedRef(f"job_b{i}", "bob", i + 1) for i in range(3)]
    order = fair_order(queued, {"alice": 5, "bob": 2})
    assert [j.user_id for j in order] == ["bob", "alice"] * 3
    assert [j.id for j in order[:2]] == ["job_b0", "job_a0"]
    newcomer = fair_order([*queued, QueuedRef("job_c0", "carol", 1)], {"alice": 5, "bob": 2})
    assert newcomer[0].user_id == "carol"
