"""What every engine stub shares: a control block tests steer, and small helpers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StubControl"]


@dataclass
class StubControl:
    """Knobs and records of one stub engine.

    ``steps`` x ``step_delay_s`` is how long a job runs; ``hang`` makes the engine stop
    answering mid-job (status and progress calls never return, the job never ends);
    ``fail`` makes the next job fail with that message; ``gate`` (when set) holds every
    job at its first step until the test opens it; ``hold_at`` holds it before that step
    (after the earlier steps reported their progress) until ``release`` is set.
    """

    steps: int = 3
    step_delay_s: float = 0.05
    hang: bool = False
    fail: str | None = None
    gate: asyncio.Event | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)
    interrupts: int = 0
    cancelled: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    hold_at: int | None = None
    """Hold a job before this step (1-based) until ``release`` is set."""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, method: str, path: str, body: Any = None) -> None:
        self.calls.append((method, path))
        if body is not None:
            self.bodies.append(body)

    def paths(self) -> list[str]:
        return [p for _, p in self.calls]

    async def stall(self) -> None:
        """Never return (until the request is cancelled): an engine that stopped answering."""
        await asyncio.Event().wait()

    async def step(self, index: int = 0) -> None:
        if self.hold_at is not None and index == self.hold_at:
            await self.release.wait()
        if self.gate is not None:
            await self.gate.wait()
        if self.hang:
            await self.stall()
        await asyncio.sleep(self.step_delay_s)
