"""Callback URLs: parsed into parts, normalised, and refused with the reason when a relay
path appended to them could land anywhere but under the agent's base path."""

from __future__ import annotations

import ipaddress

import pytest

from inference_club.domain.callback_url import CallbackUrl, parse_callback_url
from inference_club.errors import InvalidRequest


@pytest.mark.parametrize(
    ("raw", "parsed", "netloc"),
    [
        ("http://127.0.0.1:9000", CallbackUrl("http", "127.0.0.1", 9000, ""), "127.0.0.1:9000"),
        ("HTTPS://Rig.Example.org/", CallbackUrl("https", "rig.example.org", 443, ""), "rig.example.org"),
        ("http://[::1]:8080/agent/a1/", CallbackUrl("http", "::1", 8080, "/agent/a1"), "[::1]:8080"),
        ("http://[0:0::1]", CallbackUrl("http", "::1", 80, ""), "[::1]"),
        (
            "https://rig.example.org:443/x",
            CallbackUrl("https", "rig.example.org", 443, "/x"),
            "rig.example.org",
        ),
    ],
)
def test_accepted_urls_are_normalised(raw: str, parsed: CallbackUrl, netloc: str) -> None:
    assert parse_callback_url(raw) == parsed
    assert parsed.netloc == netloc


def test_relay_paths_go_under_the_base_path() -> None:
    url = parse_callback_url("http://rig.local:9000/agent")
    assert url.relay_path("llm", "/v1/chat/completions") == "/agent/relay/llm/v1/chat/completions"
    assert url.ip is None and str(url) == "http://rig.local:9000/agent"
    assert parse_callback_url("http://10.0.0.2").ip == ipaddress.IPv4Address("10.0.0.2")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ftp://rig", "http:// or https://"),
        ("http:/rig", "http:// or https://"),
        ("http://rig/?x=/relay", "query string"),
        ("http://rig/#frag", "fragment"),
        ("http://user:pw@rig", "user name or password"),
        ("http://rig:0", "invalid port"),
        ("http://rig:70000", "invalid port"),
        ("http://rig /x", "spaces or control characters"),
        ("http://rïg", "ASCII"),
        ("http://rig\\@evil", "backslashes"),
        ("http://2130706433/", "looks numeric"),
        ("http://0x7f.1/", "looks numeric"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("http://bad_host!/", "invalid host name"),
        ("http://rig/a/../b", "'..' segments"),
        ("http://rig/a%2Fb", "not allowed"),
        ("http:///path", "must name a host"),
    ],
)
def test_refusals_name_the_field_and_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason) as refused:
        parse_callback_url(raw)
    assert refused.value.param == "callback_url"
