"""Ids: prefixed, fixed length, lower-case base32, ordered by creation time."""

from __future__ import annotations

import re
import time

from inference_club.domain.ids import new_id


def test_ids_are_prefixed_base32_and_unique() -> None:
    ids = {new_id("job") for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        assert re.fullmatch(r"job_[0-9abcdefghjkmnpqrstvwxyz]{26}", value)


def test_a_later_id_sorts_after_an_earlier_one() -> None:
    first = new_id("key")
    time.sleep(0.002)  # the time part counts milliseconds
    assert new_id("key") > first
