"""Real processes on loopback ports: ``inference-club serve``, ``inference-club agent``, engines.

Shared by every end-to-end test; each helper returns a :class:`ProcessHandle` that the
test (or the fixture) stops, or kills with SIGKILL to prove recovery.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inference_club.testing.processes import (
    CLI,
    HubProcess,
    start_agent,
    start_fake_engine,
    start_hub,
    wait_for_model,
    write_agent_config,
)
from inference_club.testing.servers import ProcessHandle

__all__ = [
    "CLI",
    "HubProcess",
    "start_agent",
    "start_fake_engine",
    "start_hub",
    "wait_for_model",
    "write_agent_config",
]


@pytest.fixture
def processes() -> Iterator[list[ProcessHandle]]:
    """Collects handles; everything still running is stopped at the end of the test."""
    started: list[ProcessHandle] = []
    yield started
    for handle in reversed(started):
        handle.stop(timeout=3)
