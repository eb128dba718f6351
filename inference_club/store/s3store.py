"""File bytes in an S3-compatible object store (AWS S3, MinIO, Ceph, Garage...).

Requests are signed with botocore's SigV4 signer and sent through the hub's own pooled
HTTP client, so bytes stream: a small object is one PUT, a larger one a multipart upload
in parts of ``part_size`` bytes (aborted when the write fails), reads stream the answer.
Objects are addressed path-style: ``{endpoint}/{bucket}/{prefix}{key}``.

Any trouble reaching the store (refused connection, timeout, a 5xx answer) raises
:class:`~inference_club.errors.StorageUnavailable` (503 ``busy``), never a bare 500.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import anyio
import httpx
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from inference_club.errors import NotFound, StorageUnavailable
from inference_club.settings import Settings
from inference_club.store.filestore import write_through

__all__ = ["S3Config", "S3FileStore", "S3FileWriter"]

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part, except the last one
DEFAULT_PART_SIZE = 8 * 1024 * 1024
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


@dataclass(frozen=True, slots=True)
class S3Config:
    endpoint: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    prefix: str = ""

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"S3Config(endpoint={self.endpoint!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"


class _KnownPayloadAuth(S3SigV4Auth):  # type: ignore[misc]
    """Signs with a payload hash computed beforehand (off the event loop for big parts)."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context["payload_sha256"])


class S3FileStore:
    def __init__(
        self,
        http: httpx.AsyncClient,
        config: S3Config,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        self._http = http
        self.config = config
        self.part_size = part_size
        self._credentials = Credentials(config.access_key_id, config.secret_access_key)
        self._signer = _KnownPayloadAuth(self._credentials, "s3", config.region)
        self._bucket_url = f"{config.endpoint.rstrip('/')}/{config.bucket}"
        self._timeout = timeout or httpx.Timeout(60.0, connect=5.0)

    def __repr__(self) -> str:
        return f"<S3FileStore {self._bucket_url}/{self.config.prefix}>"

    # --- FileStore ------------------------------------------------------------------------

    async def open_writer(self, key: str) -> S3FileWriter:
        return S3FileWriter(self, self.object_url(key))

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        return await write_through(await self.open_writer(key), chunks)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        request = self._request("GET", self.object_url(key))
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _unavailable("read", exc) from exc
        try:
            if response.status_code == 404:
                raise NotFound(f"The stored bytes of {key!r} are missing.", param="file_id")
            _check(response, "read", await response.aread() if response.status_code >= 300 else b"")
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:
                raise _unavailable("read", exc) from exc
        finally:
            await response.aclose()

    async def delete(self, key: str) -> None:
        response = await self._send("DELETE", self.object_url(key), "delete")
        if response.status_code != 404:  # already gone is fine
            _check(response, "delete")

    async def exists(self, key: str) -> bool:
        response = await self._send("HEAD", self.object_url(key), "exists")
        if response.status_code == 404:
            return False
        _check(response, "exists")
        return True

    # --- beyond the FileStore protocol ----------------------------------------------------

    def object_url(self, key: str) -> str:
        if not _SAFE_KEY.match(key):
            raise ValueError(f"invalid storage key {key!r}")
        return f"{self._bucket_url}/{self.config.prefix}{key}"

    def presigned_get(
        self, key: str, *, ttl_s: int, response_headers: Mapping[str, str] | None = None
    ) -> str:
        """A URL anyone may GET the object at for ``ttl_s`` seconds (no request is made here).

        ``response_headers`` (``content-type``, ``content-disposition``, ...) are the headers
        the store answers with, as S3's ``response-*`` query parameters.
        """
        url = self.object_url(key)
        if response_headers:
            url += "?" + urlencode(
                {f"response-{name.lower()}": value for name, value in sorted(response_headers.items())},
                quote_via=quote,
                safe="",
            )
        request = AWSRequest(method="GET", url=url, headers={})
        S3SigV4QueryAuth(self._credentials, "s3", self.config.region, expires=ttl_s).add_auth(request)
        return str(request.url)

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet (test setups, first start)."""
        response = await self._send("HEAD", self._bucket_url, "bucket check")
        if response.status_code == 200:
            return
        response = await self._send("PUT", self._bucket_url, "bucket creation")
        _check(response, "bucket creation")

    # --- signed requests ------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        payload_sha256: str = _EMPTY_SHA256,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        signing = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
        signing.context["payload_sha256"] = payload_sha256
        self._signer.add_auth(signing)
        signed = {name: str(value) for name, value in signing.headers.items()}
        return self._http.build_request(method, url, headers=signed, content=body, timeout=self._timeout)

    async def _send(
        self,
        method: str,
        url: str,
        action: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        digest = await _sha256(body)
        request = self._request(method, url, body=body, payload_sha256=digest, headers=headers)
        try:
            return await self._http.send(request)
        except httpx.HTTPError as exc:
            raise _unavailable(action, exc) from exc


class S3FileWriter:
    """Buffers up to one part; the first full part turns the upload into a multipart one."""

    def __init__(self, store: S3FileStore, url: str) -> None:
        self._store = store
        self._url = url
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._etags: list[str] = []
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.size += len(chunk)
        part_size = self._store.part_size
        while len(self._buffer) >= part_size:
            part = bytes(self._buffer[:part_size])
            del self._buffer[:part_size]
            await self._upload_part(part)

    async def commit(self) -> int:
        if self._upload_id is None:
            response = await self._store._send("PUT", self._url, "upload", body=bytes(self._buffer))
            _check(response, "upload")
        else:
            if self._buffer:
                await self._upload_part(bytes(self._buffer))
            await self._complete()
        self._buffer = bytearray()
        return self.size

    async def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        # Best effort: a failed abort leaves parts a bucket lifecycle rule cleans up.
        try:
            await self._store._send("DELETE", f"{self._url}?uploadId={quote(upload_id, safe='')}", "abort")
        except StorageUnavailable:
            pass

    async def _upload_part(self, part: bytes) -> None:
        try:
            if self._upload_id is None:
                self._upload_id = await self._initiate()
            number = len(self._etags) + 1
            query = f"partNumber={number}&uploadId={quote(self._upload_id, safe='')}"
            response = await self._store._send("PUT", f"{self._url}?{query}", "upload", body=part)
            _check(response, "upload")
            self._etags.append(response.headers.get("etag", ""))
        except BaseException:
            await self.abort()
            raise

    async def _initiate(self) -> str:
        response = await self._store._send("POST", f"{self._url}?uploads", "upload")
        _check(response, "upload")
        upload_id = _xml_text(response.content, "UploadId")
        if not upload_id:
            raise StorageUnavailable("The object store did not start the multipart upload.")
        return upload_id

    async def _complete(self) -> None:
        assert self._upload_id is not None
        parts = "".join(
            f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
            for number, etag in enumerate(self._etags, start=1)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        url = f"{self._url}?uploadId={quote(self._upload_id, safe='')}"
        try:
            response = await self._store._send(
                "POST", url, "upload", body=body, headers={"content-type": "application/xml"}
            )
            # S3 may answer 200 with an <Error> body once the upload was under way.
            _check(response, "upload", response.content if b"<Error>" in response.content else b"")
        except BaseException:
            await self.abort()
            raise
        self._upload_id = None


async def _sha256(body: bytes) -> str:
    if len(body) < 256 * 1024:
        return hashlib.sha256(body).hexdigest()
    return await anyio.to_thread.run_sync(lambda: hashlib.sha256(body).hexdigest())


def _xml_text(document: bytes, tag: str) -> str | None:
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return None
    if root.tag.rsplit("}", 1)[-1] == tag:
        return root.text
    found = root.find(f"{{*}}{tag}")
    if found is None:
        found = root.find(tag)
    return found.text if found is not None else None


def _check(response: httpx.Response, action: str, error_body: bytes = b"") -> None:
    """Refuse an error answer (or a 2xx carrying an S3 ``<Error>`` document)."""
    if response.status_code < 300 and not error_body:
        return
    code = _xml_text(error_body or response.content, "Code") or f"HTTP {response.status_code}"
    raise StorageUnavailable(f"The file store refused the {action} ({code}).")


def _unavailable(action: str, exc: Exception) -> StorageUnavailable:
    return StorageUnavailable(f"The file store could not be reached for the {action} ({type(exc).__name__}).")


def s3_store_from(http: httpx.AsyncClient, values: Settings) -> S3FileStore:
    """The store the settings describe (``IC_S3_*``); a clear error when one is missing."""
    missing = [
        name
        for name in ("s3_bucket", "s3_access_key_id", "s3_secret_access_key")
        if not getattr(values, name)
    ]
    if missing:
        names = ", ".join(f"IC_{name.upper()}" for name in missing)
        raise ValueError(f"IC_S3_ENDPOINT is set but {names} is not")
    assert values.s3_endpoint and values.s3_bucket and values.s3_access_key_id and values.s3_secret_access_key
    config = S3Config(
        endpoint=values.s3_endpoint,
        bucket=values.s3_bucket,
        region=values.s3_region,
        access_key_id=values.s3_access_key_id,
        secret_access_key=values.s3_secret_access_key,
        prefix=values.s3_prefix,
    )
    return S3FileStore(http, config, timeout=httpx.Timeout(60.0, connect=values.connect_timeout_s))
