"""Where file bytes live. Local directory by default; the interface fits S3 too."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import anyio

_CHUNK = 256 * 1024


class FileWriter(Protocol):
    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> int: ...

    async def abort(self) -> None: ...


class FileStore(Protocol):
    async def open_writer(self, key: str) -> FileWriter: ...

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int: ...

    def read(self, key: str) -> AsyncIterator[bytes]: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool: ...


async def write_through(writer: FileWriter, chunks: AsyncIterator[bytes]) -> int:
    """Write every chunk and commit; anything going wrong (or a cancel) aborts: no partial file."""
    try:
        async for chunk in chunks:
            await writer.write(chunk)
    except BaseException:
        await writer.abort()
        raise
    return await writer.commit()


class LocalFileStore:
    """Files under a directory, written to a temporary name then renamed (no partial reads)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"<LocalFileStore {self.root}>"

    def _path(self, key: str) -> Path:
        if "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key[-2:] / key

    async def open_writer(self, key: str) -> LocalFileWriter:
        path = self._path(key)
        await anyio.to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
        tmp = path.with_suffix(".part")
        return LocalFileWriter(path, tmp, await anyio.open_file(tmp, "wb"))

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        return await write_through(await self.open_writer(key), chunks)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self._path(key), "rb") as handle:
            while chunk := await handle.read(_CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        return await anyio.to_thread.run_sync(path.exists)


class LocalFileWriter:
    def __init__(self, path: Path, tmp: Path, handle: anyio.AsyncFile[bytes]) -> None:
        self._path = path
        self._tmp = tmp
        self._handle = handle
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        await self._handle.write(chunk)
        self.size += len(chunk)

    async def commit(self) -> int:
        await self._handle.aclose()
        await anyio.to_thread.run_sync(os.replace, self._tmp, self._path)
        return self.size

    async def abort(self) -> None:
        await self._handle.aclose()
        tmp = self._tmp
        await anyio.to_thread.run_sync(lambda: tmp.unlink(missing_ok=True))
