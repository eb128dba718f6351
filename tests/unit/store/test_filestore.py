"""The local file store: bytes round-trip, a failed write leaves nothing, keys never leave the root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference_club.store.filestore import LocalFileStore


async def chunks(*parts: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail:
        raise ConnectionError("the client went away")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def read_all(store: LocalFileStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key)])


async def test_bytes_round_trip_under_the_root(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path / "files")
    big = bytes(range(256)) * 4096  # 1 MiB: read back in several chunks
    assert await store.write("file_abc123", chunks(b"head-", big)) == len(big) + 5
    assert await read_all(store, "file_abc123") == b"head-" + big
    assert await store.exists("file_abc123") and not await store.exists("file_other")
    # fanned out by the key's last two characters
    assert files_under(tmp_path / "files") == [tmp_path / "files" / "23" / "file_abc123"]
    await store.delete("file_abc123")
    await store.delete("file_abc123")  # already gone is fine
    assert not await store.exists("file_abc123")


async def test_a_failed_write_leaves_no_file_and_no_part(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path)
    await store.write("file_keep", chunks(b"old"))
    with pytest.raises(ConnectionError):
        await store.write("file_keep", chunks(b"new", b"partial", fail=True))
    assert await read_all(store, "file_keep") == b"old"  # the earlier bytes are untouched
    with pytest.raises(ConnectionError):
        await store.write("file_never", chunks(b"x", fail=True))
    assert not await store.exists("file_never")
    assert [p.name for p in files_under(tmp_path)] == ["file_keep"]


async def test_a_writer_shows_nothing_until_commit(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path)
    writer = await store.open_writer("file_w1")
    await writer.write(b"abc")
    assert not await store.exists("file_w1")
    assert await writer.commit() == 3
    assert await read_all(store, "file_w1") == b"abc"


@pytest.mark.parametrize("key", ["../escape", "a/b", "..", ".hidden", "a\\b", "/etc/passwd"])
async def test_keys_cannot_name_a_path_outside_the_root(tmp_path: Path, key: str) -> None:
    store = LocalFileStore(tmp_path / "files")
    with pytest.raises(ValueError, match="invalid storage key"):
        await store.write(key, chunks(b"x"))
    with pytest.raises(ValueError):
        await store.exists(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    with pytest.raises(ValueError):
        await read_all(store, key)
    assert files_under(tmp_path) == []


async def test_reading_a_missing_key_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await read_all(LocalFileStore(tmp_path), "file_missing")
