"""Which addresses the hub may call a direct agent at: judged by what they reach (mapped,
NAT64, 6to4, unspecified forms), denied networks first, an allow-list when set, private
ranges only when allowed; host names resolved, every address checked, briefly cached."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from inference_club.domain.callback_url import IPAddress, parse_callback_url
from inference_club.services.callback_policy import CallbackBlocked, CallbackPolicy, reached_address
from inference_club.settings import DEFAULT_DENIED_CIDRS
from tests.conftest import make_settings


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("address", "reached"),
    [
        ("::ffff:169.254.169.254", "169.254.169.254"),
        ("::169.254.169.254", "169.254.169.254"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("2002:a9fe:a9fe::1", "169.254.169.254"),
        ("::", "::1"),
        ("0.0.0.0", "127.0.0.1"),
        ("0.1.2.3", "127.0.0.1"),
        ("::1", "::1"),
        ("8.8.8.8", "8.8.8.8"),
        ("2001:4860:4860::8888", "2001:4860:4860::8888"),
    ],
)
def test_an_address_is_judged_by_what_it_reaches(address: str, reached: str) -> None:
    assert reached_address(ip(address)) == ip(reached)


PUBLIC_ONLY = CallbackPolicy(deny_cidrs=DEFAULT_DENIED_CIDRS, allow_private=False)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.10",
        "172.16.5.5",
        "::1",
        "fc00::1",
        "224.0.0.1",
        "0.0.0.0",
        "::ffff:10.0.0.1",
    ],
)
def test_private_addresses_are_refused_unless_allowed(address: str) -> None:
    reason = PUBLIC_ONLY.refusal(ip(address))
    assert reason is not None and "IC_ALLOW_PRIVATE_CALLBACKS" in reason
    assert CallbackPolicy(deny_cidrs=DEFAULT_DENIED_CIDRS, allow_private=True).refusal(ip(address)) is None


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "fe80::1", "100.100.100.200"],
)
def test_metadata_and_link_local_are_refused_even_with_private_allowed(address: str) -> None:
    policy = CallbackPolicy(deny_cidrs=DEFAULT_DENIED_CIDRS, allow_private=True)
    reason = policy.refusal(ip(address))
    assert reason is not None and "blocked network" in reason


def test_public_addresses_pass() -> None:
    assert PUBLIC_ONLY.refusal(ip("8.8.8.8")) is None
    assert PUBLIC_ONLY.refusal(ip("2001:4860:4860::8888")) is None


def test_an_allow_list_admits_only_its_networks_private_ones_included() -> None:
    policy = CallbackPolicy(allow_cidrs=["10.0.0.0/8"], deny_cidrs=["10.9.0.0/16"], allow_private=False)
    assert policy.refusal(ip("10.1.2.3")) is None
    assert policy.refusal(ip("::ffff:10.1.2.3")) is None  # judged by what it reaches
    outside = policy.refusal(ip("8.8.8.8"))
    assert outside is not None and "IC_CALLBACK_ALLOW_CIDRS" in outside
    denied = policy.refusal(ip("10.9.1.1"))  # deny wins over allow
    assert denied is not None and "blocked network" in denied


def test_the_policy_comes_from_settings(tmp_path: Path) -> None:
    production = make_settings(tmp_path, environment="production", secret_key="k" * 40)
    assert CallbackPolicy.from_settings(production).refusal(ip("127.0.0.1")) is not None
    development = make_settings(tmp_path)
    assert CallbackPolicy.from_settings(development).refusal(ip("127.0.0.1")) is None
    assert CallbackPolicy.from_settings(development).refusal(ip("169.254.169.254")) is not None
    assert "private=allowed" in repr(CallbackPolicy.from_settings(development))


class Resolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise OSError("name not known")
        return self.answers[host]


async def test_a_literal_address_is_checked_without_resolving() -> None:
    resolver = Resolver({})
    policy = CallbackPolicy(allow_private=False, resolver=resolver)
    assert await policy.addresses(parse_callback_url("http://8.8.8.8:80")) == [ip("8.8.8.8")]
    with pytest.raises(CallbackBlocked):
        await policy.addresses(parse_callback_url("http://[::1]:8080"))
    assert resolver.calls == []


async def test_a_name_is_resolved_and_cached_and_every_address_must_pass() -> None:
    resolver = Resolver(
        {
            "agent.example": ["8.8.8.8", "8.8.8.8", "fe80::1%eth0"],
            "ok.example": ["8.8.4.4"],
            "empty.example": [],
        }
    )
    policy = CallbackPolicy(deny_cidrs=DEFAULT_DENIED_CIDRS, allow_private=False, resolver=resolver)
    target = parse_callback_url("http://ok.example:9000")
    assert await policy.addresses(target) == [ip("8.8.4.4")]
    assert await policy.addresses(target) == [ip("8.8.4.4")]
    assert resolver.calls == [("ok.example", 9000)]  # the second answer came from the cache
    with pytest.raises(CallbackBlocked, match="blocked network"):
        await policy.addresses(parse_callback_url("http://agent.example"))  # one bad address is enough
    with pytest.raises(CallbackBlocked, match="does not resolve"):
        await policy.addresses(parse_callback_url("http://nowhere.example"))
    with pytest.raises(CallbackBlocked, match="does not resolve"):
        await policy.addresses(parse_callback_url("http://empty.example"))


async def test_a_cached_name_is_resolved_again_after_its_ttl() -> None:
    resolver = Resolver({"agent.example": ["8.8.8.8"]})
    policy = CallbackPolicy(allow_private=False, resolver=resolver, resolve_ttl_s=0.0)
    target = parse_callback_url("http://agent.example")
    await policy.addresses(target)
    resolver.answers["agent.example"] = ["10.0.0.1"]  # re-bound to a private address
    with pytest.raises(CallbackBlocked):
        await policy.addresses(target)
