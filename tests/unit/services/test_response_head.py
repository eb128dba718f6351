"""What the hub refuses to relay from an agent's response head."""

from __future__ import annotations

import pytest

from inference_club.services.transports.base import BadResponseHead, TransportUnavailable, check_response_head


@pytest.mark.parametrize("status", [200, 204, 301, 404, 429, 503, 599])
def test_final_statuses_pass(status: int) -> None:
    check_response_head("rig", status, [("content-type", "application/json"), ("x-note", "caf\u00e9\tok")])


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (100, []),
        (101, []),
        (103, []),
        (600, []),
        (200, [("content-type", "text/plain\r\nset-cookie: a=b")]),
        (200, [("x-a", "a\x00b")]),
        (200, [("x-a", "a\nb")]),
        (200, [("x-a", "a\rb")]),
        (200, [("x-a", "a\x7fb")]),
        (200, [("bad name", "x")]),
        (200, [("x:y", "x")]),
        (200, [("", "x")]),
        (200, [("content-type", "text/plain; name=\u65e5\u672c")]),
    ],
)
def test_unsafe_heads_are_refused_as_unavailable(status: int, headers: list[tuple[str, str]]) -> None:
    with pytest.raises(BadResponseHead, match="'rig'") as caught:
        check_response_head("rig", status, headers)
    # Nothing of the answer was used: the router may fail over to another provider.
    assert isinstance(caught.value, TransportUnavailable)


def test_non_latin1_text_is_fine_in_headers_the_hub_does_not_relay() -> None:
    check_response_head("rig", 200, [("x-model-name", "\u65e5\u672c")])
