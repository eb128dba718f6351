"""The agent progress route: field checks, job attempts only, the key's own jobs only."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.store.tables import Job, User
from tests.conftest import RunningHub, make_settings, running_hub


async def running_job(hub: RunningHub, username: str) -> str:
    """A job row in its first attempt, as the dispatcher leaves it while the engine works."""
    now = utcnow()
    async with hub.hub.database.transaction() as session:
        user = (await session.execute(select(User).where(User.username == username))).scalar_one()
        job = Job(
            id=new_id("job"),
            user_id=user.id,
            key_id=None,
            batch_id=None,
            endpoint="images.generations",
            model="m",
            body={},
            status="PROCESSING",
            attempts=1,
            max_attempts=1,
            revision=1,
            request_id="req",
            base_url=hub.base_url,
            files=[],
            created_at=now,
            queued_at=now,
            run_after=now,
            started_at=now,
        )
        session.add(job)
    return job.id


async def test_progress_reports_are_checked_and_scoped(tmp_path: Path, database_url: str | None) -> None:
    async with running_hub(make_settings(tmp_path / "data", database_url)) as hub:
        await _check_progress(hub)


async def _check_progress(hub: RunningHub) -> None:
    alice, bob = await hub.new_user("alice"), await hub.new_user("bob")

    def client(key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"})

    async with client(alice) as http:
        for body, param in (
            ({"progress": 0.5}, "request_id"),
            ({"request_id": "job_x.1", "progress": 2}, "progress"),
            ({"request_id": "job_x.1", "progress": True}, "progress"),
            ({"request_id": "job_x.1", "progress": 0.1, "stage": 5}, "stage"),
        ):
            answer = await http.post("/api/inference/agent/progress", json=body)
            assert answer.status_code == 400, body
            assert answer.json()["error"]["param"] == param
        synchronous = await http.post(
            "/api/inference/agent/progress/", json={"request_id": "req_abc", "progress": 0.5}
        )
        assert synchronous.status_code == 202 and synchronous.json() == {"accepted": False}
    job_id = await running_job(hub, "alice")
    async with client(bob) as http:  # bob's key cannot move alice's job
        answer = await http.post(
            "/api/inference/agent/progress", json={"request_id": f"{job_id}.1", "progress": 0.5}
        )
        assert answer.status_code == 202 and answer.json() == {"accepted": True}
    await hub.hub.progress.flush()
    async with client(alice) as http:
        assert (await http.get(f"/v1/jobs/{job_id}")).json()["progress"] is None
        stale = await http.post(
            "/api/inference/agent/progress", json={"request_id": f"{job_id}.2", "progress": 0.5}
        )
        assert stale.status_code == 202  # another attempt: nothing changes
        await hub.hub.progress.flush()
        assert (await http.get(f"/v1/jobs/{job_id}")).json()["progress"] is None
        await http.post(
            "/api/inference/agent/progress",
            json={"request_id": f"{job_id}.1", "progress": 0.25, "stage": "step 5/20"},
        )
        await hub.hub.progress.flush()
        job = (await http.get(f"/v1/jobs/{job_id}")).json()
        assert job["progress"]["value"] == 0.25 and job["progress"]["stage"] == "step 5/20"
        assert isinstance(job["progress"]["updated_at"], int)
    async with httpx.AsyncClient(base_url=hub.base_url) as anonymous:
        assert (await anonymous.post("/api/inference/agent/progress", json={})).status_code == 401
