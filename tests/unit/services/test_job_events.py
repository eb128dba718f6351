"""A job's public shape, and the in-process signal that wakes whoever waits on a job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from inference_club.services.job_events import JobSignals, job_envelope, job_public
from inference_club.store.tables import Job

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_job(job_id: str = "job_1", status: str = "PROCESSED", revision: int = 3) -> Job:
    return Job(
        id=job_id,
        user_id="u",
        key_id=None,
        batch_id=None,
        endpoint="audio.speech",
        model="tts",
        body={"model": "tts", "input": "secret prompt"},
        status=status,
        attempts=1,
        max_attempts=3,
        revision=revision,
        request_id="req",
        base_url="http://hub",
        provider_id="p",
        provider_name="rig",
        result={"file_id": "file_1"},
        result_url=None,
        files=["file_1"],
        error=None,
        progress=None,
        created_at=T0,
        queued_at=T0,
        run_after=T0,
        started_at=T0 + timedelta(seconds=2),
        finished_at=T0 + timedelta(seconds=5.5),
    )


def test_the_envelope_and_the_detail() -> None:
    job = make_job()
    envelope = job_envelope(job)
    assert envelope == {
        "id": "job_1",
        "object": "inference.job",
        "status": "PROCESSED",
        "inference_type": "tts",
        "endpoint": "/v1/audio/speech",
        "model": "tts",
        "created": int(T0.timestamp()),
        "queued_at": int(T0.timestamp()),
    }
    detail = job_public(job)
    assert detail.items() >= envelope.items()
    assert detail["timings"] == {"queued_s": 2.0, "run_s": 3.5}
    assert detail["result"] == {"file_id": "file_1"} and detail["provider"] == "rig"
    assert "body" not in detail  # the prompt is the caller's, not part of the job's shape
    listed = job_public(job, with_result=False)
    assert "result" not in listed and listed["files"] == ["file_1"]
    queued = make_job(status="QUEUED")
    queued.started_at = queued.finished_at = None
    assert job_public(queued)["timings"] == {"queued_s": None, "run_s": None}


def test_subscribers_of_a_job_get_its_changes_and_listeners_get_all() -> None:
    signals = JobSignals()
    seen: list[str] = []
    signals.on_change(lambda job: seen.append(job.id))
    with signals.subscribe("job_1") as mine, signals.subscribe("job_1") as again:
        signals.publish(make_job("job_1", revision=4))
        signals.publish(make_job("job_2"))
        for queue in (mine, again):
            event = queue.get_nowait()
            assert (event.job_id, event.revision, event.status) == ("job_1", 4, "PROCESSED")
            assert event.payload["id"] == "job_1"
            assert queue.empty()
        assert "watched=1" in repr(signals)
    assert seen == ["job_1", "job_2"]
    assert "watched=0" in repr(signals)  # the last subscriber gone, nothing is kept


def test_a_stalled_reader_loses_its_oldest_events_instead_of_blocking_the_publisher() -> None:
    signals = JobSignals()
    with signals.subscribe("job_1") as queue:
        for revision in range(queue.maxsize + 10):
            signals.publish(make_job(revision=revision))
        # The newest states are kept (the last one may be the job's end).
        assert queue.full() and queue.get_nowait().revision == 10
