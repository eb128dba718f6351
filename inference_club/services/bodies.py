"""Request bodies the hub forwards: parsed once, replayable for failover.

JSON bodies keep their original bytes (only re-serialised when ``async`` must be
stripped or a field rewritten). Multipart bodies are re-encoded from the parsed form
so that uploads spooled to disk can be streamed again to another provider.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

import anyio
import orjson

_CHUNK = 64 * 1024


@dataclass(slots=True)
class JsonBody:
    raw: bytes
    data: dict[str, Any]

    @property
    def content_type(self) -> str:
        return "application/json"

    def without(self, *names: str) -> JsonBody:
        if not any(n in self.data for n in names):
            return self
        data = {k: v for k, v in self.data.items() if k not in names}
        return JsonBody(orjson.dumps(data), data)

    def with_fields(self, **values: Any) -> JsonBody:
        data = {**self.data, **values}
        return JsonBody(orjson.dumps(data), data)

    def get(self, name: str) -> Any:
        return self.data.get(name)

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.raw


@dataclass(slots=True)
class UploadPart:
    field: str
    filename: str
    content_type: str
    file: IO[bytes]
    size: int

    async def chunks(self) -> AsyncIterator[bytes]:
        """The spooled upload from its start, read off the event loop."""
        await anyio.to_thread.run_sync(self.file.seek, 0)
        while chunk := await anyio.to_thread.run_sync(self.file.read, _CHUNK):
            yield chunk


@dataclass(slots=True)
class MultipartBody:
    fields: list[tuple[str, str]]
    files: list[UploadPart]
    boundary: str = field(default_factory=lambda: "ic-" + secrets.token_hex(16))

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def get(self, name: str) -> str | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def with_fields(self, **values: str) -> MultipartBody:
        kept = [(k, v) for k, v in self.fields if k not in values]
        return MultipartBody(kept + list(values.items()), self.files, self.boundary)

    def without(self, *names: str) -> MultipartBody:
        kept = [(k, v) for k, v in self.fields if k not in names]
        return MultipartBody(kept, self.files, self.boundary)

    async def chunks(self) -> AsyncIterator[bytes]:
        dash = f"--{self.boundary}\r\n".encode()
        for name, value in self.fields:
            yield dash + _disposition(name) + b"\r\n\r\n" + value.encode() + b"\r\n"
        for part in self.files:
            head = (
                dash
                + _disposition(part.field, part.filename)
                + f"\r\nContent-Type: {part.content_type}\r\n\r\n".encode()
            )
            yield head
            async for chunk in part.chunks():
                yield chunk
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()

    def close(self) -> None:
        for part in self.files:
            part.file.close()


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _disposition(name: str, filename: str | None = None) -> bytes:
    text = f'Content-Disposition: form-data; name="{_quote(name)}"'
    if filename is not None:
        text += f'; filename="{_quote(filename)}"'
    return text.encode()


Body = JsonBody | MultipartBody
