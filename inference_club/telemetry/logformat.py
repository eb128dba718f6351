"""Log line formats: readable text (the default) or one JSON object per line.

A record may carry structured fields (``extra={"fields": {...}}``): the per-request
lines of hub and agent do. Text output appends them as ``key=value``; JSON output puts
them beside ``time``, ``level``, ``logger`` and ``message``. Secrets never reach these
fields: the callers put only ids, names, numbers and paths in them, and the record
factory of :mod:`inference_club.redact` scrubs messages and arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
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
    handler = TurnBatchingHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)


class TurnBatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines logged in one turn of its event loop together.

    Every relayed call logs a line; written one by one, each is a system call of its own on
    the hot path. While a loop is attached (:func:`log_lines_per_turn`), a line logged in
    the loop's thread waits for the loop's next turn, when all lines of the turn leave in
    one write. A record at WARNING or above, one from another thread, and every record
    while no loop is attached are written at once, after the lines still waiting (the
    order is kept). Lines waiting when the process exits are written by
    :func:`logging.shutdown`.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Gather the lines logged in ``loop``'s thread (the caller's) per turn of ``loop``."""
        with self.lock:  # type: ignore[union-attr]
            self._loop = loop
            self._thread = threading.get_ident()

    def detach(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._loop = None
            self._thread = 0
        self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        loop = self._loop
        if (
            loop is None
            or record.levelno >= logging.WARNING
            or threading.get_ident() != self._thread
            or loop.is_closed()
        ):
            self._write_waiting()
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if not self._waiting:
            loop.call_soon(self.flush)
        self._waiting.append(line)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()
            super().flush()

    def _write_waiting(self) -> None:
        """Write the lines waiting; the caller holds the handler's lock."""
        if self._waiting:
            lines, self._waiting = self._waiting, []
            try:
                self.stream.write(self.terminator.join(lines) + self.terminator)
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": lines[0]}))


@contextlib.contextmanager
def log_lines_per_turn(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """While inside, the root logger's :class:`TurnBatchingHandler` (if it has one) writes
    the lines logged in ``loop``'s thread once per turn of ``loop``."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, TurnBatchingHandler)]
    for handler in handlers:
        handler.attach(loop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.detach()
