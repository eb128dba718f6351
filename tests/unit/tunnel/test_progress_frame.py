"""Tunnel protocol version 2: PROGRESS frames and version negotiation."""

from __future__ import annotations

import pytest

from inference_club.tunnel.protocol import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    FrameType,
    Hello,
    Progress,
    ProtocolError,
    decode_frame,
)


def test_progress_round_trips_as_a_connection_frame() -> None:
    frame = decode_frame(Progress("job_1.2", 0.25, "step 5/20").to_frame().encode())
    assert frame.type is FrameType.PROGRESS and frame.stream_id == 0
    assert Progress.from_frame(frame) == Progress("job_1.2", 0.25, "step 5/20")


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True])
def test_progress_out_of_range_is_a_protocol_error(value: object) -> None:
    frame = Progress("r", 0.5).to_frame()
    bad = frame.payload.replace(
        b'"progress":0.5',
        b'"progress":' + str(value).lower().encode() if not isinstance(value, str) else b'"progress":"half"',
    )
    with pytest.raises(ProtocolError, match="progress"):
        Progress.from_frame(type(frame)(frame.type, 0, frame.flags, bad))


def test_version_three_is_spoken_and_older_ones_still_accepted() -> None:
    assert PROTOCOL_VERSION == 3 and SUPPORTED_VERSIONS == {1, 2, 3}
    for version in (1, 2):
        old = Hello(heartbeat={"name": "x"}, protocol=version).to_frame()
        assert Hello.from_frame(decode_frame(old.encode())).protocol == version
