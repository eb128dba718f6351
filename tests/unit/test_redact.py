"""Secrets masked in log text and log records: keys, tokens, signatures, passwords; the rest untouched."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest

from inference_club.redact import MASK, install_log_redaction, redact, scrub_record

KEY = "ic_" + "k" * 24


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /v1/models?api_key=s3cr3t&limit=5", f"GET /v1/models?api_key={MASK}&limit=5"),
        ("GET /x?Access-Token=s3cr3t#frag", f"GET /x?Access-Token={MASK}#frag"),
        ("refresh_token=abc password=hunter2", f"refresh_token={MASK} password={MASK}"),
        ("{'x-api-key': 'the-key', 'accept': '*/*'}", f"{{'x-api-key': '{MASK}', 'accept': '*/*'}}"),
        ("cookie: session=abc; theme=dark", f"cookie: {MASK}"),
        ("sent bearer eyJhbGciOi.payload.sig upstream", f"sent bearer {MASK} upstream"),
        (f"key {KEY} revoked", f"key {MASK} revoked"),
        ("postgresql://hub:pa55@db:5432/hub failed", f"postgresql://hub:{MASK}@db:5432/hub failed"),
        ("Authorization: Bearer abcd1234", f"Authorization: {MASK}"),
        ("[(b'authorization', b'Bearer tok-5678')]", f"[(b'authorization', b'Bearer {MASK}')]"),
    ],
)
def test_secret_values_are_masked_and_the_names_kept(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "secret", "name"),
    [
        ("Authorization: Bearer abcd1234", "abcd1234", "Authorization: "),
        ("proxy-authorization=Basic Zm9vOmJhcg==", "Zm9vOmJhcg", "proxy-authorization="),
        ("[(b'authorization', b'Bearer tok-5678')]", "tok-5678", "[(b'authorization', b'"),
    ],
)
def test_authorization_values_are_masked_whatever_their_scheme(text: str, secret: str, name: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert cleaned.startswith(name) and MASK in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "provider 'rig' went offline after 3 misses",
        "monkey=5 primary_key=7 hockey=3",  # 'key' inside a longer name is not a key
        "redis://127.0.0.1:6379/11 is up",  # a URL without a password
        "bearer ab",  # too short to be a token
        "ic_short",  # too short to be a hub key
    ],
)
def test_ordinary_text_is_left_exactly_as_it_was(text: str) -> None:
    assert redact(text) == text


def _record(msg: object, args: object) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]


class _Url:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def test_a_records_message_and_arguments_are_scrubbed_keeping_their_shape() -> None:
    clean_url = _Url("http://h/x")
    record = scrub_record(
        _record("%s %s %d %r %s", (f"token={KEY}", clean_url, 200, b"raw", _Url("http://h/?sig=abc")))
    )
    assert record.args is not None and isinstance(record.args, tuple)
    assert record.args[0] == f"token={MASK}"
    assert record.args[1] is clean_url  # nothing secret: the object itself, for %r to format
    assert record.args[2] == 200 and record.args[3] == b"raw"
    assert record.args[4] == f"http://h/?sig={MASK}"  # a secret in its text: replaced by the text
    assert KEY not in record.getMessage()


def test_a_message_and_mapping_arguments_are_scrubbed() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "%(a)s %(n)s", None, None)
    record.args = {"a": "token=zzzz9999", "n": None}
    scrub_record(record)
    assert record.args == {"a": f"token={MASK}", "n": None}
    direct = scrub_record(_record(f"revoked {KEY}", None))
    assert direct.msg == f"revoked {MASK}"


def test_exception_text_is_scrubbed() -> None:
    try:
        raise RuntimeError(f"cannot use api_key={KEY}")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    scrub_record(record)
    assert record.exc_text is not None
    assert "RuntimeError" in record.exc_text and KEY not in record.exc_text
    assert f"api_key={MASK}" in record.exc_text


@pytest.fixture
def own_record_factory() -> Iterator[None]:
    before = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    yield
    logging.setLogRecordFactory(before)


@pytest.mark.usefixtures("own_record_factory")
def test_installed_redaction_covers_every_logger_and_installs_once() -> None:
    install_log_redaction()
    factory = logging.getLogRecordFactory()
    install_log_redaction()
    assert logging.getLogRecordFactory() is factory  # not wrapped twice
    record = logging.getLogger("some.library").makeRecord(
        "some.library", logging.WARNING, __file__, 1, "GET %s", (f"/x?key={KEY}",), None
    )
    assert record.getMessage() == f"GET /x?key={MASK}"
