"""Session cookies, CSRF tokens and the sign-in throttle."""

from __future__ import annotations

from inference_club.services.sessions import LoginThrottle, SessionSigner, password_fingerprint


def test_a_session_cookie_round_trips_and_resists_tampering() -> None:
    signer = SessionSigner("secret", ttl_s=60)
    cookie, session = signer.issue("usr_1", "$argon2id$hash", now=1000)
    read = signer.read(cookie, now=1010)
    assert read == session and read.user_id == "usr_1" and read.expires == 1060
    assert read.password_fingerprint == password_fingerprint("$argon2id$hash")
    payload, _, signature = cookie.rpartition(".")
    assert signer.read(payload + "." + signature[:-2] + "AA", now=1010) is None
    assert signer.read(cookie.replace(payload, payload[:-2] + "xx"), now=1010) is None
    assert SessionSigner("other secret", ttl_s=60).read(cookie, now=1010) is None
    assert signer.read("ic_an_api_key", now=1010) is None
    assert signer.read(cookie, now=1061) is None  # expired


def test_csrf_tokens_are_bound_to_their_anchor() -> None:
    signer = SessionSigner("secret", ttl_s=60)
    token = signer.csrf_token("nonce-a")
    assert signer.check_csrf("nonce-a", token)
    assert not signer.check_csrf("nonce-b", token)
    assert not signer.check_csrf("nonce-a", None)
    assert not signer.check_csrf(None, token)


def test_failed_sign_ins_are_throttled_per_user_and_per_address() -> None:
    throttle = LoginThrottle(max_failures=3, window_s=100)
    for i in range(3):
        assert throttle.retry_after("alice", "10.0.0.1", now=i) == 0
        throttle.failed("alice", "10.0.0.1", now=i)
    assert throttle.retry_after("alice", "10.0.0.9", now=5) == 95  # the user, from anywhere
    assert throttle.retry_after("bob", "10.0.0.1", now=5) == 95  # the address, for anyone
    assert throttle.retry_after("bob", "10.0.0.2", now=5) == 0
    assert throttle.retry_after("ALICE", "10.0.0.9", now=101) == 0  # the oldest failure aged out
    throttle.failed("carol", "10.0.0.3", now=0)
    throttle.succeeded("carol")
    assert throttle.retry_after("carol", "10.0.0.4", now=1) == 0
