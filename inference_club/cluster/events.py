"""The replicas' notification fan-out in one place: revocations, job and run changes."""

from __future__ import annotations

from inference_club.cluster.broadcast import Broadcast
from inference_club.cluster.redis_link import RedisLink
from inference_club.cluster.revocation import RevocationFanout
from inference_club.cluster.signals import SignalFanout
from inference_club.services.job_events import JobSignals
from inference_club.services.jobs import JobService
from inference_club.services.revocation import KeyWatch
from inference_club.services.workflows import WorkflowSignals
from inference_club.store.db import Database


class ClusterEvents:
    def __init__(
        self,
        link: RedisLink,
        *,
        database: Database,
        key_watch: KeyWatch,
        jobs: JobService,
        job_signals: JobSignals,
        run_signals: WorkflowSignals,
    ) -> None:
        self.broadcast = Broadcast(link)
        self.revocations = RevocationFanout(self.broadcast, key_watch)
        self.signals = SignalFanout(self.broadcast, database, jobs, job_signals, run_signals)

    def __repr__(self) -> str:
        return f"<ClusterEvents {self.broadcast!r}>"

    async def start(self) -> None:
        await self.broadcast.start()

    async def stop(self) -> None:
        await self.broadcast.stop()
        await self.signals.stop()
