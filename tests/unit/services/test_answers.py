"""Reading engine answers under caps, on a real file store: chunks stop at the answer cap
while reading, media files are capped and typed on their first bytes, JSON media answers
have their base64 stored as files (all undone when the answer turns out bad), and stored
files are spliced back as base64."""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from inference_club.errors import AnswerTooLarge, UpstreamError
from inference_club.services.answers import (
    AnswerLimits,
    MediaSink,
    base64_of,
    capped_chunks,
    file_placeholder,
    splice_files,
    store_media_json,
)
from tests.conftest import make_settings
from tests.unit.services.built_hub import Built, built_hub

LIMITS = AnswerLimits(answer_bytes=10, media_bytes=64, json_bytes=200)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


class Answer:
    """An engine's answer as the transports hand it over."""

    status = 200
    headers: list[tuple[str, str]] = []
    agent_error = False

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.read = 0

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk

    async def aclose(self) -> None:
        return None


async def chunks_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def sniff(head: bytes) -> str:
    return "image/png" if head.startswith(b"\x89PNG") else "application/octet-stream"


async def user_files(built: Built) -> list[str]:
    return [r.id for r in await built.hub.files.list(user_id=built.principal.user_id, limit=50, after=None)]


def test_limits_come_from_settings_and_name_their_setting(tmp_path: Path) -> None:
    limits = AnswerLimits.from_settings(
        make_settings(tmp_path, max_answer_bytes=1000, max_media_bytes=2000, max_json_answer_bytes=3000)
    )
    assert limits == AnswerLimits(1000, 2000, 3000)
    assert "IC_MAX_ANSWER_BYTES" in limits.answer_too_large().message
    assert "3000 bytes of JSON" in limits.json_too_large().message
    assert "77 bytes of JSON" in limits.json_too_large(77).message
    assert "IC_MAX_MEDIA_BYTES" in limits.media_too_large().message


async def test_chunks_pass_up_to_the_cap_and_stop_as_soon_as_it_is_passed() -> None:
    within = Answer(b"12345", b"67890")
    assert [c async for c in capped_chunks(within, 10, LIMITS.answer_too_large)] == [b"12345", b"67890"]
    over = Answer(b"123456", b"78901", b"never read")
    seen: list[bytes] = []
    with pytest.raises(AnswerTooLarge):
        async for chunk in capped_chunks(over, 10, LIMITS.answer_too_large):
            seen.append(chunk)
    assert seen == [b"123456"] and over.read == 2


async def test_a_media_file_is_typed_by_its_first_bytes(built: Built) -> None:
    pending = await built.hub.files.begin(
        user_id=built.principal.user_id, content_type="image/*", purpose="output"
    )
    sink = MediaSink(pending, LIMITS, sniff)
    for i in range(0, len(PNG), 5):  # the signature arrives split
        await sink.write(PNG[i : i + 5])
    await sink.flush()
    record = await built.hub.files.finish(sink.pending)
    assert (record.content_type, record.filename, record.bytes) == ("image/png", f"{record.id}.png", len(PNG))
    assert b"".join([c async for c in built.hub.files.content(record)]) == PNG


async def test_a_short_media_file_is_typed_on_flush(built: Built) -> None:
    pending = await built.hub.files.begin(
        user_id=built.principal.user_id, content_type="image/*", purpose="output"
    )
    sink = MediaSink(pending, LIMITS, sniff)
    await sink.write(b"tiny")
    await sink.flush()
    assert pending.content_type == "application/octet-stream" and pending.filename.endswith(".bin")


async def test_a_media_file_past_its_cap_fails_while_writing(built: Built) -> None:
    pending = await built.hub.files.begin(
        user_id=built.principal.user_id, content_type="audio/wav", purpose="output"
    )
    sink = MediaSink(pending, LIMITS, None)
    await sink.write(b"x" * 64)
    with pytest.raises(AnswerTooLarge, match="IC_MAX_MEDIA_BYTES"):
        await sink.write(b"x")
    await pending.writer.abort()


async def test_a_json_media_answer_keeps_its_skeleton_and_stores_each_image(built: Built) -> None:
    first, second = PNG, b"RIFF-not-a-png-but-some-bytes"
    document = orjson.dumps(
        {
            "created": 1,
            "data": [
                {"b64_json": base64.b64encode(first).decode()},
                {"b64_json": base64.b64encode(second).decode()},
            ],
        }
    )
    pieces = [document[i : i + 7] for i in range(0, len(document), 7)]
    stored = await store_media_json(
        chunks_of(*pieces),
        built.hub.files,
        LIMITS,
        user_id=built.principal.user_id,
        content_type="image/*",
        sniff=sniff,
    )
    assert stored.answer == {"created": 1, "data": [{"b64_json": 0}, {"b64_json": 1}]}
    assert (
        stored.files[0].content_type == "image/png"
        and stored.files[1].content_type == "application/octet-stream"
    )
    for index, data in ((0, first), (1, second)):
        assert b"".join([c async for c in built.hub.files.content(stored.files[index])]) == data
    assert sorted(await user_files(built)) == sorted(r.id for r in stored.files.values())


async def test_a_malformed_answer_leaves_no_files(built: Built) -> None:
    good = base64.b64encode(PNG).decode()
    broken = f'{{"data": [{{"b64_json": "{good}"}}, {{"b64_json": "{good}'.encode()  # cut off mid-value
    with pytest.raises(UpstreamError, match="malformed"):
        await store_media_json(
            chunks_of(broken, b"]"),
            built.hub.files,
            LIMITS,
            user_id=built.principal.user_id,
            content_type="image/png",
        )
    assert await user_files(built) == []


async def test_a_skeleton_past_the_json_cap_is_too_large(built: Built) -> None:
    document = orjson.dumps({"data": [{"b64_json": base64.b64encode(PNG).decode()}], "padding": "p" * 500})
    with pytest.raises(AnswerTooLarge, match="IC_MAX_JSON_ANSWER_BYTES"):
        await store_media_json(
            chunks_of(document),
            built.hub.files,
            LIMITS,
            user_id=built.principal.user_id,
            content_type="image/png",
        )
    assert await user_files(built) == []


@pytest.mark.parametrize("cuts", [[], [1], [2, 3], [5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
async def test_base64_of_any_chunking_is_the_base64_of_the_whole(cuts: list[int]) -> None:
    data = bytes(range(10))
    edges = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(edges)]
    encoded = b"".join([p async for p in base64_of(chunks_of(*pieces))])
    assert encoded == base64.b64encode(data)


async def test_placeholders_are_spliced_with_the_files_base64(built: Built) -> None:
    files = built.hub.files
    records = [
        await files.save(
            user_id=built.principal.user_id, data=data, content_type="image/png", purpose="output"
        )
        for data in (b"first file", b"second")
    ]
    document = orjson.dumps(
        {
            "data": [{"b64_json": file_placeholder(1)}, {"b64_json": file_placeholder(0)}],
            "note": file_placeholder(7),
        }
    )
    spliced = orjson.loads(b"".join([p async for p in splice_files(document, files, records)]))
    assert spliced["data"] == [
        {"b64_json": base64.b64encode(b"second").decode()},
        {"b64_json": base64.b64encode(b"first file").decode()},
    ]
    assert spliced["note"] == file_placeholder(7)  # not one of this answer's files: left as it was
