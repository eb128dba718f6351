"""The incremental JSON media splitter: any chunking, escapes, data URLs, broken answers."""

from __future__ import annotations

import base64
import json
import random

import pytest

from inference_club.services.media_json import (
    MediaBytes,
    MediaJsonError,
    MediaJsonSplitter,
    MediaStart,
    SkeletonTooLarge,
)

_rng = random.Random(7)
IMAGES = [bytes(_rng.randrange(256) for _ in range(n)) for n in (0, 1, 2, 3, 1000, 5000)]
DOC = {
    "created": 1,
    "b64_json": None,
    "data": [
        {"b64_json": base64.b64encode(i).decode(), "revised_prompt": 'say "hi" \\ there'} for i in IMAGES
    ],
}


def split(raw: bytes, step: int, limit: int = 10_000) -> tuple[object, dict[int, bytes]]:
    splitter = MediaJsonSplitter(skeleton_limit=limit)
    files: dict[int, bytes] = {}
    for start in range(0, len(raw), step):
        for event in splitter.feed(raw[start : start + step]):
            if isinstance(event, MediaStart):
                files[event.index] = b""
            elif isinstance(event, MediaBytes):
                files[event.index] += event.data
    return splitter.parse(), files


VARIANTS = {
    "plain": json.dumps(DOC).encode(),
    "escaped slashes": json.dumps(DOC).encode().replace(b"/", b"\\/"),
    "unicode escapes": json.dumps(DOC).encode().replace(b"A", b"\\u0041"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("step", [1, 2, 3, 5, 64, 1 << 20])
def test_every_b64_json_value_becomes_a_file_whatever_the_chunking(variant: str, step: int) -> None:
    skeleton, files = split(VARIANTS[variant], step)
    assert isinstance(skeleton, dict)
    assert skeleton["b64_json"] is None
    for item, image in zip(skeleton["data"], IMAGES, strict=True):
        assert item["revised_prompt"] == 'say "hi" \\ there'
        assert files[item["b64_json"]] == image


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_a_data_url_with_line_breaks_is_decoded(step: int) -> None:
    value = "data:image/png;base64," + base64.encodebytes(IMAGES[-1]).decode()
    skeleton, files = split(json.dumps({"data": [{"b64_json": value}]}).encode(), step)
    assert files[0] == IMAGES[-1]
    assert skeleton == {"data": [{"b64_json": 0}]}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"data": [{"b64_json": "A"}]}',  # one base64 character is no byte
        b'{"data": [{"b64_json": "AAAA',  # ends inside the string
        b"<html>not json</html>",
        b'{"data": [{"b64_json": "AA\\qAA"}]}',  # no such escape
    ],
)
def test_broken_answers_are_refused(raw: bytes) -> None:
    with pytest.raises(MediaJsonError):
        split(raw, 3)


def test_the_json_around_the_media_is_capped() -> None:
    with pytest.raises(SkeletonTooLarge):
        split(json.dumps({"data": [], "note": "x" * 5000}).encode(), 1000, limit=1000)
    # The media themselves do not count.
    split(json.dumps({"data": [{"b64_json": "QUFB" * 5000}]}).encode(), 1000, limit=1000)
