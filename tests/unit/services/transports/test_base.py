"""The transport seam: which answer heads may be relayed, and picking a provider's transport."""

from __future__ import annotations

import pytest

from inference_club.domain.providers import ProviderState
from inference_club.services.transports.base import (
    BadResponseHead,
    Transports,
    TransportUnavailable,
    check_response_head,
)


@pytest.mark.parametrize("status", [200, 204, 404, 503, 599])
def test_final_statuses_with_clean_headers_pass(status: int) -> None:
    check_response_head("rig", status, [("content-type", "application/json"), ("x-note", "caf\u00e9 \t ok")])


@pytest.mark.parametrize(
    ("status", "headers", "fragment"),
    [
        (101, [], "not a final answer"),
        (600, [], "not a final answer"),
        (200, [("bad name", "v")], "invalid header name"),
        (200, [("x-a", "one\r\nset-cookie: stolen=1")], "forbidden character"),
        (200, [("x-a", "nul\x00")], "forbidden character"),
        (200, [("content-type", "text/plain; charset=\u2603")], "forbidden character"),
    ],
)
def test_heads_that_would_break_or_smuggle_are_refused(
    status: int, headers: list[tuple[str, str]], fragment: str
) -> None:
    with pytest.raises(BadResponseHead, match=fragment) as refused:
        check_response_head("rig", status, headers)
    # Refused before anything was used: the router may fail over.
    assert isinstance(refused.value, TransportUnavailable)


def test_a_provider_on_a_transport_the_hub_lacks_is_unavailable() -> None:
    provider = ProviderState(
        id="p",
        user_id="u",
        name="rig",
        transport="pigeon",
        callback_url=None,
        visibility="private",
        agent_secret="s",
        services=[],
        last_seen=0.0,
        created=0,
    )
    with pytest.raises(TransportUnavailable, match="'pigeon' is not available"):
        Transports().for_provider(provider)
