"""Files: uploads and generated media, owner-only, with signed expiring share links."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.domain.web_content import (
    clean_filename,
    content_disposition,
    is_inline,
    served_content_type,
)
from inference_club.errors import NotFound
from inference_club.services.signed_urls import SignedLink, UrlSigner
from inference_club.store import file_records as q
from inference_club.store.db import Database
from inference_club.store.filestore import FileStore, FileWriter
from inference_club.store.tables import StoredFile

_EXTENSIONS = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/mpeg": ".mp3",
    "audio/flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/aac": ".aac",
    "video/mp4": ".mp4",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "model/gltf-binary": ".glb",
}


def extension_for(content_type: str) -> str:
    return _EXTENSIONS.get(content_type.split(";")[0].strip().lower(), ".bin")


#: Makes a short-lived URL the object store serves a stored object at:
#: ``(storage_key, ttl_s, response_headers) -> url``.
Presigner = Callable[[str, int, Mapping[str, str]], str]

#: Lifetime of a presigned download redirect: the client follows it at once.
PRESIGNED_TTL_S = 60


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
    def __init__(
        self,
        database: Database,
        store: FileStore,
        *,
        secret: str,
        media_url_ttl_s: int = 3600,
        presigner: Presigner | None = None,
    ) -> None:
        self._db = database
        self.store = store
        self._presigner = presigner
        self.signer = UrlSigner(secret, default_ttl_s=media_url_ttl_s)

    def __repr__(self) -> str:
        return f"<FileService {self.store!r}>"

    async def begin(
        self, *, user_id: str, content_type: str, purpose: str, filename: str | None = None
    ) -> PendingFile:
        file_id = new_id("file")
        writer = await self.store.open_writer(file_id)
        name = clean_filename(filename) or f"{file_id}{extension_for(content_type)}"
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
        self,
        *,
        user_id: str,
        data: bytes | AsyncIterator[bytes],
        content_type: str,
        purpose: str,
        filename: str | None = None,
    ) -> StoredFile:
        pending = await self.begin(
            user_id=user_id, content_type=content_type, purpose=purpose, filename=filename
        )
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

    async def list(
        self, *, user_id: str, limit: int, after: str | None, content_prefix: str | None = None
    ) -> list[StoredFile]:
        async with self._db.read() as session:
            return list(
                await q.list_files(
                    session, user_id=user_id, limit=limit, after=after, content_prefix=content_prefix
                )
            )

    async def delete(self, file_id: str, *, user_id: str) -> None:
        record = await self.get(file_id, user_id=user_id)
        # Bytes first: a store that is down fails the delete and leaves the file whole.
        await self.store.delete(record.storage_key)
        async with self._db.transaction() as session:
            await q.delete_file(session, file_id=file_id)

    def content(self, record: StoredFile) -> AsyncIterator[bytes]:
        return self.store.read(record.storage_key)

    async def open_content(self, record: StoredFile) -> AsyncIterator[bytes]:
        """The file's bytes, with the first chunk already read: a store that is down or an
        object that is missing fails here, before a response status is sent."""
        chunks = self.store.read(record.storage_key)
        first = await anext(chunks, None)

        async def replay() -> AsyncIterator[bytes]:
            if first is not None:
                yield first
            async for chunk in chunks:
                yield chunk

        return replay()

    def download_redirect(self, record: StoredFile) -> str | None:
        """A presigned object store URL to answer a download with, when the hub is set up so."""
        if self._presigner is None:
            return None
        headers = {
            "content-type": served_content_type(record.content_type),
            "content-disposition": content_disposition(
                record.filename, inline=is_inline(record.content_type)
            ),
        }
        return self._presigner(record.storage_key, PRESIGNED_TTL_S, headers)

    def sign(self, file_id: str, *, expires_in_s: int | None = None) -> SignedLink:
        return self.signer.sign(file_id, ttl_s=expires_in_s)

    def check_signature(self, file_id: str, exp: int, sig: str) -> bool:
        return self.signer.verify(file_id, exp, sig)

    def media_url(self, base_url: str, file_id: str) -> str:
        """The signed, expiring URL of a generated file, as inference answers carry it."""
        return self.signer.url(file_url(base_url, file_id), file_id)


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
