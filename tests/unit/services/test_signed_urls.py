"""Signed file links: valid until they expire, bound to one file and one secret."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from inference_club.services.signed_urls import UrlSigner


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_link_verifies_until_it_expires() -> None:
    clock = Clock(1_000_000.0)
    signer = UrlSigner("s3cret", default_ttl_s=3600, clock=clock)
    link = signer.sign("file_a")
    assert link.exp == 1_000_000 + 3600
    assert signer.verify("file_a", link.exp, link.sig)
    clock.now += 3600
    assert signer.verify("file_a", link.exp, link.sig)
    clock.now += 1
    assert not signer.verify("file_a", link.exp, link.sig)


def test_link_is_bound_to_file_expiry_and_secret() -> None:
    signer = UrlSigner("s3cret", default_ttl_s=60)
    link = signer.sign("file_a")
    assert not signer.verify("file_b", link.exp, link.sig)
    assert not signer.verify("file_a", link.exp + 10, link.sig)
    assert not signer.verify("file_a", link.exp, link.sig[:-1] + ("0" if link.sig[-1] != "0" else "1"))
    assert not UrlSigner("other", default_ttl_s=60).verify("file_a", link.exp, link.sig)


def test_url_carries_exp_and_sig() -> None:
    signer = UrlSigner("k", default_ttl_s=120, clock=Clock(10.0))
    url = signer.url("http://hub/v1/files/file_x/content", "file_x", ttl_s=5)
    parts = urlsplit(url)
    assert parts.path == "/v1/files/file_x/content"
    query = parse_qs(parts.query)
    assert query["exp"] == ["15"]
    assert signer.verify("file_x", 15, query["sig"][0])
