"""Text and JSON log lines, with a record's structured fields."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from inference_club.telemetry.logformat import (
    JsonFormatter,
    TextFormatter,
    TurnBatchingHandler,
    configure_logging,
    log_lines_per_turn,
)


def record(
    message: str = "request",
    fields: dict[str, object] | None = None,
    exc_info: tuple[Any, Any, Any] | None = None,
) -> logging.LogRecord:
    made = logging.LogRecord("inference_club.access", logging.INFO, __file__, 1, message, None, exc_info)
    if fields is not None:
        made.fields = fields
    return made


def test_text_appends_fields_as_key_value() -> None:
    line = TextFormatter().format(
        record(fields={"request_id": "req_1", "status": 200, "user": None, "path": "/v1/a b", "model": ""})
    )
    assert line.endswith(
        'INFO inference_club.access request request_id=req_1 status=200 user=- path="/v1/a b" model=-'
    )


def test_text_without_fields_is_the_plain_line() -> None:
    assert TextFormatter().format(record("hello")).endswith("INFO inference_club.access hello")


def test_json_is_one_object_with_the_fields() -> None:
    line = JsonFormatter().format(record(fields={"request_id": "req_1", "status": 200, "ms": 1.5}))
    data = orjson.loads(line)
    assert (
        data["level"] == "INFO" and data["logger"] == "inference_club.access" and data["message"] == "request"
    )
    assert data["request_id"] == "req_1" and data["status"] == 200 and data["ms"] == 1.5
    assert data["time"].endswith("+00:00")
    assert "\n" not in line


def test_json_carries_the_exception_on_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = JsonFormatter().format(record("failed", exc_info=sys.exc_info()))
    data = orjson.loads(line)
    assert data["message"] == "failed" and "ValueError: boom" in data["exception"]
    assert "\n" not in line


def test_configure_logging_leaves_a_configured_root_alone() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    root.addHandler(logging.NullHandler())
    try:
        configure_logging("debug", "json", stream=io.StringIO())
        assert len(root.handlers) == len(before) + 1 and root.level == level
    finally:
        root.handlers = before
        root.setLevel(level)


_RECORD_FLAGS = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")


@contextlib.contextmanager
def _bare_root() -> Iterator[logging.Logger]:
    """The root logger with no handlers; its handlers, level and logging's flags restored after."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    saved_flags = {name: getattr(logging, name) for name in _RECORD_FLAGS}
    root.handlers = []
    try:
        yield root
    finally:
        root.handlers = saved
        root.setLevel(level)
        for name, value in saved_flags.items():
            setattr(logging, name, value)


def test_configure_logging_installs_the_format_on_a_bare_root() -> None:
    out = io.StringIO()
    with _bare_root():
        configure_logging("info", "json", stream=out)
        logging.getLogger("inference_club.test").info("hello", extra={"fields": {"request_id": "r1"}})
        # What no line prints is not gathered for each record.
        assert not any(getattr(logging, name) for name in _RECORD_FLAGS)
    assert orjson.loads(out.getvalue())["request_id"] == "r1"


def test_text_time_is_the_default_format_however_it_is_cached() -> None:
    formatter, reference = TextFormatter(), logging.Formatter()
    for created in (1_764_300_000.001, 1_764_300_000.999, 1_764_300_001.5, 1_764_299_999.25):
        made = record()
        made.created, made.msecs = created, (created - int(created)) * 1000
        assert formatter.formatTime(made) == reference.formatTime(made)
    assert formatter.formatTime(made, "%Y") == reference.formatTime(made, "%Y")


def test_text_lines_are_the_standard_formats_whichever_way_they_are_made() -> None:
    formatter = TextFormatter()
    reference = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    reference.formatTime = formatter.formatTime  # type: ignore[method-assign]
    plain = logging.LogRecord("inference_club.x", logging.WARNING, __file__, 1, "%s of %d", ("two", 3), None)
    assert formatter.format(plain) == reference.format(plain) == formatter.format(plain)
    assert formatter.format(plain).endswith("WARNING inference_club.x two of 3")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", fields={"status": 500}, exc_info=sys.exc_info())
    text = formatter.format(failed)  # the exception takes the generic way, fields included
    assert "failed status=500\nTraceback" in text and text.endswith("ValueError: boom")


class _Writes(io.StringIO):
    """A stream that keeps each write it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def _batching() -> tuple[_Writes, logging.Logger, TurnBatchingHandler]:
    """A logger of its own writing through a handler attached to the running loop."""
    stream = _Writes()
    handler = TurnBatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"inference_club.test.batching.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [handler]
    handler.attach(asyncio.get_running_loop())
    return stream, logger, handler


async def test_lines_logged_in_one_turn_of_the_loop_leave_in_one_write() -> None:
    stream, logger, handler = _batching()
    logger.info("one")
    logger.info("two")
    assert stream.writes == []  # not yet: the loop's turn is not over
    await asyncio.sleep(0)
    assert stream.writes == ["one\ntwo\n"]
    logger.info("three")
    await asyncio.sleep(0)
    assert stream.writes == ["one\ntwo\n", "three\n"]
    handler.detach()


async def test_a_warning_goes_at_once_after_the_lines_still_waiting() -> None:
    stream, logger, handler = _batching()
    logger.info("first")
    logger.warning("then a warning")
    assert stream.getvalue() == "first\nthen a warning\n"
    handler.detach()


async def test_lines_from_another_thread_go_at_once_and_detach_writes_what_waits() -> None:
    stream, logger, handler = _batching()
    logger.info("in the loop")
    await asyncio.to_thread(logger.info, "from a thread")
    # The thread's line went at once, after the loop's line that was waiting.
    assert stream.getvalue() == "in the loop\nfrom a thread\n"
    logger.info("last")
    handler.detach()  # as the hub's lifespan ends
    assert stream.getvalue().endswith("last\n")
    logger.info("no loop attached")
    assert stream.getvalue().endswith("no loop attached\n")


def test_log_lines_per_turn_attaches_the_root_handler_it_installed() -> None:
    stream = _Writes()
    with _bare_root() as root:
        configure_logging("info", "text", stream=stream)
        [handler] = root.handlers
        assert isinstance(handler, TurnBatchingHandler)

        async def serve() -> None:
            with log_lines_per_turn(asyncio.get_running_loop()):
                logging.getLogger("inference_club.test").info("a")
                logging.getLogger("inference_club.test").info("b")
                assert stream.writes == []
                await asyncio.sleep(0)
                assert len(stream.writes) == 1

        asyncio.run(serve())
