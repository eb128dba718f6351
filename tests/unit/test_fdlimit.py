"""The open-file limit goes up to the hard limit (never down, never past it)."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from inference_club.fdlimit import raise_open_file_limit


@pytest.fixture
def restored_limit() -> Iterator[tuple[int, int]]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_the_soft_limit_rises_to_the_hard_limit(restored_limit: tuple[int, int]) -> None:
    soft, hard = restored_limit
    low = min(soft, 256) if hard == resource.RLIM_INFINITY else min(soft, hard, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    raised = raise_open_file_limit()
    assert raised is not None and raised > low
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (raised, hard)
    assert raise_open_file_limit() == raised  # already there: unchanged
