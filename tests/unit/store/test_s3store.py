"""The S3 file store against a real S3 server (moto): one PUT or a multipart upload, streamed
reads, presigned links, and ``StorageUnavailable`` (never a bare error) when the store is gone."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from inference_club.errors import NotFound, StorageUnavailable
from inference_club.store.s3store import MIN_PART_SIZE, S3Config, S3FileStore, s3_store_from
from inference_club.testing.s3_server import S3Server
from inference_club.testing.servers import free_port
from tests.conftest import make_settings


async def chunks(*parts: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail:
        raise ConnectionError("the client went away")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
async def bucket(s3_server: S3Server) -> str:
    name = f"t-{secrets.token_hex(6)}"
    await s3_server.create_bucket(name)
    return name


async def read_all(store: S3FileStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.read(key)])


def uploads_in_progress(s3_server: S3Server, bucket: str) -> str:
    answer = httpx.get(f"{s3_server.endpoint}/{bucket}?uploads", timeout=10)
    answer.raise_for_status()
    return answer.text


async def test_a_small_object_round_trips_under_the_prefix(
    s3_server: S3Server, bucket: str, http: httpx.AsyncClient
) -> None:
    store = S3FileStore(http, s3_server.config(bucket, prefix="hub/"))
    assert await store.write("file_small", chunks(b"hello ", b"world")) == 11
    assert await read_all(store, "file_small") == b"hello world"
    assert await store.exists("file_small") and not await store.exists("file_other")
    assert s3_server.object_keys(bucket) == ["hub/file_small"]
    await store.delete("file_small")
    await store.delete("file_small")  # already gone is fine
    assert s3_server.object_keys(bucket) == []
    with pytest.raises(NotFound):
        await read_all(store, "file_small")


async def test_a_large_object_goes_up_in_parts(
    s3_server: S3Server, bucket: str, http: httpx.AsyncClient
) -> None:
    store = S3FileStore(http, s3_server.config(bucket), part_size=MIN_PART_SIZE)
    body = secrets.token_bytes(1024) * (MIN_PART_SIZE // 1024) + b"tail"
    size = await store.write("file_big", chunks(body[:1000], body[1000:]))
    assert size == len(body)
    head = await http.head(store.object_url("file_big"))
    assert head.headers["etag"].strip('"').endswith("-2")  # S3 marks multipart objects with the part count
    assert await read_all(store, "file_big") == body


async def test_a_failed_multipart_write_is_aborted(
    s3_server: S3Server, bucket: str, http: httpx.AsyncClient
) -> None:
    store = S3FileStore(http, s3_server.config(bucket), part_size=MIN_PART_SIZE)
    with pytest.raises(ConnectionError):
        await store.write("file_cut", chunks(b"x" * (MIN_PART_SIZE + 1), fail=True))
    assert not await store.exists("file_cut")
    assert "<UploadId>" not in uploads_in_progress(s3_server, bucket)


async def test_a_presigned_link_serves_the_object_with_the_asked_headers(
    s3_server: S3Server, bucket: str, http: httpx.AsyncClient
) -> None:
    store = S3FileStore(http, s3_server.config(bucket))
    await store.write("file_img", chunks(b"\x89PNG"))
    url = store.presigned_get(
        "file_img",
        ttl_s=120,
        response_headers={"Content-Type": "image/png", "Content-Disposition": 'inline; filename="a b.png"'},
    )
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["120"] and "X-Amz-Signature" in query
    assert s3_server.secret_access_key not in url
    answer = await http.get(url)  # no credentials of its own
    assert answer.status_code == 200 and answer.content == b"\x89PNG"
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-disposition"] == 'inline; filename="a b.png"'


async def test_a_store_that_is_gone_is_unavailable(http: httpx.AsyncClient) -> None:
    config = S3Config(f"http://127.0.0.1:{free_port()}", "b", "us-east-1", "id", "secret")
    store = S3FileStore(http, config, timeout=httpx.Timeout(5.0, connect=1.0))
    with pytest.raises(StorageUnavailable):
        await store.write("file_x", chunks(b"x"))
    with pytest.raises(StorageUnavailable):
        await read_all(store, "file_x")
    with pytest.raises(StorageUnavailable):
        await store.exists("file_x")
    with pytest.raises(StorageUnavailable):
        await store.delete("file_x")
    with pytest.raises(StorageUnavailable):
        await store.ensure_bucket()


async def test_an_error_answer_is_unavailable_too(s3_server: S3Server, http: httpx.AsyncClient) -> None:
    store = S3FileStore(http, s3_server.config(f"missing-{secrets.token_hex(4)}"))
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        await store.write("file_x", chunks(b"x"))


async def test_keys_and_part_sizes_are_checked_and_secrets_stay_out_of_repr(http: httpx.AsyncClient) -> None:
    config = S3Config("http://s3.local", "b", "us-east-1", "AKID", "very-secret", prefix="p/")
    store = S3FileStore(http, config)
    assert store.object_url("file_1.png") == "http://s3.local/b/p/file_1.png"
    for key in ("../x", "a/b", ".hidden", "a?b", ""):
        with pytest.raises(ValueError):
            store.object_url(key)
    with pytest.raises(ValueError, match="part_size"):
        S3FileStore(http, config, part_size=MIN_PART_SIZE - 1)
    assert "very-secret" not in repr(config) and "very-secret" not in repr(store)


async def test_settings_name_whatever_is_missing(tmp_path: Path, http: httpx.AsyncClient) -> None:
    settings = make_settings(tmp_path, s3_endpoint="http://s3.local", s3_bucket="b")
    with pytest.raises(ValueError, match="IC_S3_ACCESS_KEY_ID, IC_S3_SECRET_ACCESS_KEY"):
        s3_store_from(http, settings)
    complete = make_settings(
        tmp_path,
        s3_endpoint="http://s3.local",
        s3_bucket="b",
        s3_access_key_id="id",
        s3_secret_access_key="secret",
        s3_prefix="hub/",
    )
    store = s3_store_from(http, complete)
    assert store.object_url("file_1") == "http://s3.local/b/hub/file_1"
