"""File records: owners only see their own, newest first, pages by id, prefix filter is literal."""

from __future__ import annotations

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.store import file_records as q
from inference_club.store.tables import StoredFile
from tests.unit.store.conftest import Store


def record(user_id: str, content_type: str = "image/png") -> StoredFile:
    file_id = new_id("file")
    return StoredFile(
        id=file_id,
        user_id=user_id,
        filename="a.bin",
        content_type=content_type,
        bytes=3,
        purpose="output",
        storage_key=file_id,
        created_at=utcnow(),
    )


async def test_owner_check_and_the_share_link_bypass(store: Store) -> None:
    mine = record(store.alice)
    async with store.db.transaction() as session:
        await q.add_file(session, record=mine)
    async with store.db.read() as session:
        assert (await q.get_file(session, file_id=mine.id, user_id=store.alice)) is not None
        assert await q.get_file(session, file_id=mine.id, user_id=store.bob) is None
        shared = await q.get_file(session, file_id=mine.id, user_id=None)
        assert shared is not None and shared.user_id == store.alice
        assert await q.get_file(session, file_id="file_missing", user_id=None) is None
        assert await q.list_files(session, user_id=store.bob, limit=10) == []


async def test_pages_newest_first_with_the_last_id_as_cursor(store: Store) -> None:
    files = [record(store.alice) for _ in range(5)]
    async with store.db.transaction() as session:
        for item in files:
            await q.add_file(session, record=item)
        await q.add_file(session, record=record(store.bob))
    newest_first = sorted((f.id for f in files), reverse=True)  # ids sort by creation time
    async with store.db.read() as session:
        first = [f.id for f in await q.list_files(session, user_id=store.alice, limit=2)]
        second = [f.id for f in await q.list_files(session, user_id=store.alice, limit=2, after=first[-1])]
        rest = [f.id for f in await q.list_files(session, user_id=store.alice, limit=10, after=second[-1])]
    assert first + second + rest == newest_first


async def test_content_prefix_is_matched_literally(store: Store) -> None:
    image, audio = record(store.alice, "image/png"), record(store.alice, "audio/wav")
    async with store.db.transaction() as session:
        await q.add_file(session, record=image)
        await q.add_file(session, record=audio)
    async with store.db.read() as session:
        assert [
            f.id for f in await q.list_files(session, user_id=store.alice, limit=9, content_prefix="image/")
        ] == [image.id]
        # "_" and "%" are not wildcards here
        assert await q.list_files(session, user_id=store.alice, limit=9, content_prefix="image_") == []
        assert await q.list_files(session, user_id=store.alice, limit=9, content_prefix="%") == []
        assert len(await q.list_files(session, user_id=store.alice, limit=9, content_prefix="")) == 2


async def test_delete_removes_only_that_record(store: Store) -> None:
    gone, kept = record(store.alice), record(store.alice)
    async with store.db.transaction() as session:
        await q.add_file(session, record=gone)
        await q.add_file(session, record=kept)
    async with store.db.transaction() as session:
        await q.delete_file(session, file_id=gone.id)
        await q.delete_file(session, file_id="file_missing")  # nothing to delete is no error
    async with store.db.read() as session:
        assert [f.id for f in await q.list_files(session, user_id=store.alice, limit=9)] == [kept.id]
