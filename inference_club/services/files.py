"""Files: uploads and generated media, owner-only, with signed expiring share links."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.errors import NotFound
from inference_club.store import file_records as q
from inference_club.store.db import Database
from inference_club.store.filestore import FileStore, FileWriter
from inference_club.store.tables import StoredFile

_EXTENSIONS = {
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/mpeg": ".mp3", "audio/flac": ".flac",
    "audio/ogg": ".ogg", "audio/opus": ".opus", "audio/aac": ".aac", "video/mp4": ".mp4",
    "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "model/gltf-binary": ".glb",
}


def extension_for(content_type: str) -> str:
    return _EXTENSIONS.get(content_type.split(";")[0].strip().lower(), ".bin")


@dataclass(slots=True)
class PendingFile:
    """A file being written while its bytes flow to the client."""

    id: str
    user_id: str
    filename: str
    content_type: str
    purpose: str
    writer: FileWriter


class FileService:
    def __init__(self, database: Database, store: FileStore, *, secret: str) -> None:
        self._db = database
        self.store = store
        self._secret = secret.encode()

    def __repr__(self) -> str:
        return f"<FileService {self.store!r}>"

    async def begin(self, *, user_id: str, content_type: str, purpose: str, filename: str | None = None) -> PendingFile:
        file_id = new_id("file")
        writer = await self.store.open_writer(file_id)
        name = filename or f"{file_id}{extension_for(content_type)}"
        return PendingFile(file_id, user_id, name, content_type, purpose, writer)

    async def finish(self, pending: PendingFile) -> StoredFile:
        size = await pending.writer.commit()
        record = StoredFile(
            id=pending.id,
            user_id=pending.user_id,
            filename=pending.filename,
            content_type=pending.content_type,
            bytes=size,
            purpose=pending.purpose,
            storage_key=pending.id,
            created_at=utcnow(),
        )
        async with self._db.transaction() as session:
            await q.add_file(session, record=record)
        return record

    async def save(
        self, *, user_id: str, data: bytes | AsyncIterator[bytes], content_type: str, purpose: str,
        filename: str | None = None,
    ) -> StoredFile:
        pending = await self.begin(user_id=user_id, content_type=content_type, purpose=purpose, filename=filename)
        try:
            if isinstance(data, bytes):
                await pending.writer.write(data)
            else:
                async for chunk in data:
                    await pending.writer.write(chunk)
        except BaseException:
            await pending.writer.abort()
            raise
        return await self.finish(pending)

    async def get(self, file_id: str, *, user_id: str | None) -> StoredFile:
        async with self._db.read() as session:
            record = await q.get_file(session, file_id=file_id, user_id=user_id)
        if record is None:
            raise NotFound(f"No file with id {file_id!r}.", param="file_id")
        return record

    async def list(self, *, user_id: str, limit: int, after: str | None) -> list[StoredFile]:
        async with self._db.read() as session:
            return list(await q.list_files(session, user_id=user_id, limit=limit, after=after))

    async def delete(self, file_id: str, *, user_id: str) -> None:
        record = await self.get(file_id, user_id=user_id)
        async with self._db.transaction() as session:
            await q.delete_file(session, file_id=file_id)
        await self.store.delete(record.storage_key)

    def content(self, record: StoredFile) -> AsyncIterator[bytes]:
        return self.store.read(record.storage_key)

    def sign(self, file_id: str, *, expires_in_s: int) -> tuple[int, str]:
        expires = int(time.time()) + expires_in_s
        return expires, self._signature(file_id, expires)

    def check_signature(self, file_id: str, expires: int, signature: str) -> bool:
        if expires < time.time():
            return False
        return hmac.compare_digest(self._signature(file_id, expires), signature)

    def _signature(self, file_id: str, expires: int) -> str:
        return hmac.new(self._secret, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def file_url(base_url: str, file_id: str) -> str:
    return f"{base_url.rstrip('/')}/v1/files/{file_id}/content"


def file_public(record: StoredFile, base_url: str) -> dict[str, object]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at.timestamp()),
        "filename": record.filename,
        "purpose": record.purpose,
        "content_type": record.content_type,
        "url": file_url(base_url, record.id),
    }
