"""The file service on a real database and a real folder: saving (whole or streamed, aborted
on failure), names and extensions by content type, owner-only reads and deletes, listing by
type, signed links and presigned redirects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from inference_club.errors import NotFound
from inference_club.services.files import (
    PRESIGNED_TTL_S,
    FileService,
    extension_for,
    file_public,
    file_url,
)
from tests.unit.services.built_hub import Built, built_hub


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Built]:
    async with built_hub(tmp_path) as built:
        yield built


def stored_paths(built: Built) -> list[Path]:
    root = built.hub.settings.files_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def read(files: FileService, file_id: str, user_id: str) -> bytes:
    record = await files.get(file_id, user_id=user_id)
    return b"".join([chunk async for chunk in files.content(record)])


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("image/png", ".png"),
        ("audio/mpeg", ".mp3"),
        ("IMAGE/JPEG; q=1", ".jpg"),
        ("application/x-what", ".bin"),
    ],
)
def test_the_extension_follows_the_content_type(content_type: str, extension: str) -> None:
    assert extension_for(content_type) == extension


async def test_saved_bytes_read_back_with_their_size(built: Built) -> None:
    files, user = built.hub.files, built.principal.user_id
    record = await files.save(user_id=user, data=b"\x89PNG data", content_type="image/png", purpose="output")
    assert record.id.startswith("file_") and record.bytes == 9 and record.user_id == user
    assert record.filename == f"{record.id}.png" and record.purpose == "output"
    assert await read(files, record.id, user) == b"\x89PNG data"


async def test_a_streamed_save_and_a_cleaned_client_name(built: Built) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"one "
        yield b"two"

    files, user = built.hub.files, built.principal.user_id
    record = await files.save(
        user_id=user,
        data=chunks(),
        content_type="text/plain",
        purpose="input",
        filename="../../etc/notes.txt",
    )
    assert record.filename == "notes.txt" and record.bytes == 7
    assert await read(files, record.id, user) == b"one two"


async def test_a_failing_upload_leaves_no_file_and_no_row(built: Built) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise ConnectionError("client went away")

    files, user = built.hub.files, built.principal.user_id
    with pytest.raises(ConnectionError):
        await files.save(user_id=user, data=broken(), content_type="image/png", purpose="input")
    assert await files.list(user_id=user, limit=10, after=None) == []
    assert stored_paths(built) == []


async def test_another_users_file_is_not_found_and_survives_their_delete(built: Built) -> None:
    files, user = built.hub.files, built.principal.user_id
    record = await files.save(user_id=user, data=b"mine", content_type="text/plain", purpose="input")
    bob = await built.user("bob")
    with pytest.raises(NotFound) as caught:
        await files.get(record.id, user_id=bob.user_id)
    assert caught.value.param == "file_id"
    with pytest.raises(NotFound):
        await files.delete(record.id, user_id=bob.user_id)
    assert await files.list(user_id=bob.user_id, limit=10, after=None) == []
    assert await read(files, record.id, user) == b"mine"
    assert (await files.get(record.id, user_id=None)).id == record.id  # the hub itself may read any


async def test_delete_removes_the_bytes_and_the_row(built: Built) -> None:
    files, user = built.hub.files, built.principal.user_id
    record = await files.save(user_id=user, data=b"gone soon", content_type="text/plain", purpose="input")
    assert len(stored_paths(built)) == 1
    await files.delete(record.id, user_id=user)
    assert stored_paths(built) == []
    with pytest.raises(NotFound):
        await files.get(record.id, user_id=user)


async def test_list_filters_by_content_type_prefix(built: Built) -> None:
    files, user = built.hub.files, built.principal.user_id
    png = await files.save(user_id=user, data=b"p", content_type="image/png", purpose="output")
    wav = await files.save(user_id=user, data=b"w", content_type="audio/wav", purpose="output")
    assert {r.id for r in await files.list(user_id=user, limit=10, after=None)} == {png.id, wav.id}
    assert [r.id for r in await files.list(user_id=user, limit=10, after=None, content_prefix="image/")] == [
        png.id
    ]
    assert len(await files.list(user_id=user, limit=1, after=None)) == 1


async def test_open_content_fails_before_answering_when_the_bytes_are_gone(built: Built) -> None:
    files, user = built.hub.files, built.principal.user_id
    record = await files.save(user_id=user, data=b"abc", content_type="text/plain", purpose="input")
    assert b"".join([c async for c in await files.open_content(record)]) == b"abc"
    await files.store.delete(record.storage_key)
    with pytest.raises(FileNotFoundError):
        await files.open_content(record)


async def test_signed_links_verify_until_changed_or_expired(built: Built) -> None:
    files = built.hub.files
    link = files.sign("file_a", expires_in_s=60)
    assert files.check_signature("file_a", link.exp, link.sig)
    assert not files.check_signature("file_b", link.exp, link.sig)
    assert not files.check_signature("file_a", link.exp + 1, link.sig)
    expired = files.sign("file_a", expires_in_s=-5)
    assert not files.check_signature("file_a", expired.exp, expired.sig)
    url = files.media_url("http://hub/", "file_a")
    assert url.startswith("http://hub/v1/files/file_a/content?exp=") and "&sig=" in url


async def test_a_presigner_answers_downloads_with_safe_headers(built: Built) -> None:
    calls: list[tuple[str, int, Mapping[str, str]]] = []

    def presign(key: str, ttl_s: int, headers: Mapping[str, str]) -> str:
        calls.append((key, ttl_s, headers))
        return f"https://bucket/{key}"

    files, user = built.hub.files, built.principal.user_id
    record = await files.save(
        user_id=user, data=b"<svg/>", content_type="text/html", purpose="output", filename="page.html"
    )
    assert files.download_redirect(record) is None  # no presigner: the hub serves it
    presigning = FileService(built.hub.database, files.store, secret="s", presigner=presign)
    assert presigning.download_redirect(record) == f"https://bucket/{record.storage_key}"
    [(key, ttl, headers)] = calls
    assert key == record.storage_key and ttl == PRESIGNED_TTL_S
    assert headers["content-type"] == "application/octet-stream"  # active content is not served as such
    assert headers["content-disposition"].startswith("attachment")


async def test_the_public_shape_names_the_content_url(built: Built) -> None:
    record = await built.hub.files.save(
        user_id=built.principal.user_id, data=b"x", content_type="image/png", purpose="output"
    )
    public = file_public(record, "http://hub/")
    assert public["url"] == file_url("http://hub", record.id) == f"http://hub/v1/files/{record.id}/content"
    assert (public["object"], public["bytes"], public["content_type"]) == ("file", 1, "image/png")
