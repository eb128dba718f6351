"""Secrets never reach a log line: API keys, bearer tokens, share-link signatures.

Redaction happens when a log record is created (a record factory), so it covers every
logger and handler of the process: our own, uvicorn's access and error logs, and
whatever a library logs, including exception text. Record arguments keep their shape
(uvicorn's access formatter unpacks them), only their text is scrubbed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

MASK = "[REDACTED]"

# ?api_key=..., &key=..., token=..., sig=..., signature=... (query strings, form bodies, messages)
_QUERY_SECRET = re.compile(
    r"(?i)(?<![A-Za-z0-9_.-])"
    r"((?:api[_-]?key|apikey|key|token|access[_-]?token|refresh[_-]?token|sig|signature|secret|password)=)"
    r"[^&\s#\"'<>]+"
)
# "Authorization: Bearer ...", {'authorization': '...'}, x-ic-agent-secret=...; the value may
# be a bytes repr (b'...'), whose b is taken only right before its quote.
_HEADER_SECRET = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-ic-agent-secret|cookie|set-cookie)"
    r"([\"']?\s*[:=]\s*(?:b(?=[\"']))?[\"']?)[^\"'\r\n]+"
)
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}")
_HUB_KEY = re.compile(r"\bic_[A-Za-z0-9_-]{16,}")
# postgresql://user:password@host (a database URL in a connection error)
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^@/?#\s]+@")


# Text none of the patterns above can match: one scan instead of five (most log
# arguments, e.g. every field of an access log line, are such text).
_MAYBE_SECRET = re.compile(r"(?i)=|://|authorization|api-key|agent-secret|cookie|bearer|basic|ic_")


def redact(text: str) -> str:
    """``text`` with every secret-looking value replaced by ``[REDACTED]``."""
    if _MAYBE_SECRET.search(text) is None:
        return text
    if "=" in text or ":" in text:
        text = _QUERY_SECRET.sub(rf"\1{MASK}", text)
        text = _HEADER_SECRET.sub(rf"\1\2{MASK}", text)
        text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    text = _SCHEME_TOKEN.sub(rf"\1\2{MASK}", text)
    return _HUB_KEY.sub(MASK, text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float | bytes):
        return value
    # URLs, requests, exceptions: scrub their text only when it holds a secret, so
    # numbers and %r formatting stay as they were otherwise.
    text = str(value)
    cleaned = redact(text)
    return value if cleaned == text else cleaned


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_scrub(a) for a in args)
    elif isinstance(args, Mapping):
        record.args = {k: _scrub(v) for k, v in args.items()}
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    return record


def install_log_redaction() -> None:
    """Wrap the process's log record factory once; later calls change nothing."""
    current: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
    if getattr(current, "redacts_secrets", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return scrub_record(current(*args, **kwargs))

    factory.redacts_secrets = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
