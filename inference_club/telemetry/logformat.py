"""Log line formats: readable text (the default) or one JSON object per line.

A record may carry structured fields (``extra={"fields": {...}}``): the per-request
lines of hub and agent do. Text output appends them as ``key=value``; JSON output puts
them beside ``time``, ``level``, ``logger`` and ``message``. Secrets never reach these
fields: the callers put only ids, names, numbers and paths in them, and the record
factory of :mod:`inference_club.redact` scrubs messages and arguments.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _fields(record: logging.LogRecord) -> dict[str, Any] | None:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else None


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    if not text:
        return "-"
    if " " in text or '"' in text or "=" in text:
        return orjson.dumps(text).decode()
    return text


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...``."""

    def __init__(self) -> None:
        super().__init__(_TEXT)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As the default (``2026-11-28 03:14:05,123``), formatting the date once a second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._second_text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        """As :class:`logging.Formatter` would with this format; a record with no exception
        or stack (every access line) skips its generic steps."""
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return _with_fields(f"{record.asctime} {record.levelname} {record.name} {record.message}", record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _with_fields(super().formatMessage(record), record)


def _with_fields(line: str, record: logging.LogRecord) -> str:
    """``line`` and the record's structured fields as ``key=value``."""
    fields = _fields(record)
    if fields:
        line += " " + " ".join([f"{k}={_text_value(v)}" for k, v in fields.items()])
    return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = _fields(record)
        if fields:
            data.update(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        return orjson.dumps(data, default=str).decode()


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str, log_format: str, *, stream: Any = None) -> None:
    """Give the root logger one handler in ``log_format`` at ``level``.

    A root logger that already has handlers (a test runner's) is left alone, as
    :func:`logging.basicConfig` would.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    # Nothing we print needs where a call came from or which thread or process made it;
    # skipping them makes each record cheaper (Python's logging docs, "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root.setLevel(level.upper())
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
