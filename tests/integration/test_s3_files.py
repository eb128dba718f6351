"""Files in an S3-compatible store: a real S3 server (moto) as a process, the hub on a socket."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import ValidationError

from inference_club.errors import StorageUnavailable
from inference_club.services.container import build_hub
from inference_club.store.s3store import MIN_PART_SIZE, S3Config, S3FileStore
from inference_club.testing.s3_server import S3Server, start_s3_server
from inference_club.testing.servers import free_port
from tests.conftest import RunningHub, make_settings, running_hub
from tests.integration.conftest import engine_server, run_agent, services_for

pytestmark = pytest.mark.e2e  # starts moto_server


def new_bucket() -> str:
    return f"ic-test-{secrets.token_hex(4)}"


@asynccontextmanager
async def s3_hub(
    tmp_path: Path, s3: S3Server, bucket: str, *, presigned: bool = False, prefix: str = "files/"
) -> AsyncIterator[tuple[RunningHub, str]]:
    """A hub storing its files in ``bucket``, and a member's key."""
    await s3.create_bucket(bucket)
    settings = make_settings(
        tmp_path / "data",
        s3_endpoint=s3.endpoint,
        s3_bucket=bucket,
        s3_access_key_id=s3.access_key_id,
        s3_secret_access_key=s3.secret_access_key,
        s3_prefix=prefix,
        s3_presigned_downloads=presigned,
    )
    async with running_hub(settings) as hub:
        yield hub, await hub.new_user("alice")


async def single(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


def authed(hub: RunningHub, key: str, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kwargs
    )


async def test_upload_download_and_delete_go_to_the_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = new_bucket()
    payload = os.urandom(300_000)
    async with s3_hub(tmp_path, s3_server, bucket) as (hub, key), authed(hub, key) as http:
        uploaded = await http.post(
            "/v1/files", files={"file": ("notes.bin", payload, "application/octet-stream")}
        )
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        assert s3_server.object_keys(bucket) == [f"files/{file_id}"]
        assert not (tmp_path / "data" / "files").exists()  # nothing on the local disk

        content = await http.get(f"/v1/files/{file_id}/content")
        assert content.status_code == 200 and content.content == payload
        assert content.headers["content-length"] == str(len(payload))

        assert (await http.delete(f"/v1/files/{file_id}")).json()["deleted"] is True
        assert s3_server.object_keys(bucket) == []
        assert (await http.get(f"/v1/files/{file_id}/content")).status_code == 404


async def test_a_generated_image_is_stored_in_the_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = new_bucket()
    async with AsyncExitStack() as exits:
        hub, key = await exits.enter_async_context(s3_hub(tmp_path, s3_server, bucket))
        _, engine_url = await exits.enter_async_context(engine_server())
        await exits.enter_async_context(
            run_agent(hub.base_url, key, "rig", services_for(engine_url, types=["image"]))
        )
        async with authed(hub, key) as http, httpx.AsyncClient(timeout=30) as browser:
            answer = await http.post(
                "/v1/images/generations", json={"model": "fake-image", "prompt": "a fox"}
            )
            assert answer.status_code == 200, answer.text
            url = answer.json()["data"][0]["url"]
            file_id = urlsplit(url).path.split("/")[-2]
            assert f"files/{file_id}" in s3_server.object_keys(bucket)
            image = await browser.get(url)  # the signed media link, no key
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


async def test_a_big_upload_goes_up_in_parts(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = new_bucket()
    payload = os.urandom(2 * 8 * 1024 * 1024 + 12345)  # two full 8 MiB parts and a short last one
    async with s3_hub(tmp_path, s3_server, bucket) as (hub, key), authed(hub, key) as http:
        uploaded = await http.post(
            "/v1/files", files={"file": ("big.bin", payload, "application/octet-stream")}
        )
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        async with httpx.AsyncClient(timeout=10) as plain:
            head = await plain.head(f"{s3_server.endpoint}/{bucket}/files/{file_id}")
        assert head.headers["content-length"] == str(len(payload))
        assert head.headers["etag"].strip('"').endswith("-3")  # a multipart object of three parts
        content = await http.get(f"/v1/files/{file_id}/content")
        assert hashlib.sha256(content.content).digest() == hashlib.sha256(payload).digest()


async def test_a_failed_multipart_write_is_aborted(s3_server: S3Server) -> None:
    bucket = new_bucket()
    await s3_server.create_bucket(bucket)
    async with httpx.AsyncClient() as http:
        store = S3FileStore(http, s3_server.config(bucket), part_size=MIN_PART_SIZE)

        async def chunks() -> AsyncIterator[bytes]:
            yield os.urandom(MIN_PART_SIZE + 1)  # one part goes up, then the source fails
            raise ConnectionResetError("client went away")

        with pytest.raises(ConnectionResetError):
            await store.write("file_aborted", chunks())
        pending = await http.get(f"{s3_server.endpoint}/{bucket}", params={"uploads": ""})
        assert b"<UploadId>" not in pending.content, pending.text
        assert not await store.exists("file_aborted")


async def test_presigned_download_redirects_a_plain_client(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = new_bucket()
    payload = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    async with s3_hub(tmp_path, s3_server, bucket, presigned=True) as (hub, key), authed(hub, key) as http:
        uploaded = await http.post("/v1/files", files={"file": ("pic.svg", payload, "image/svg+xml")})
        file_id = uploaded.json()["id"]
        shared = (await http.post(f"/v1/files/{file_id}/share", json={"expires_in": 600})).json()["url"]

        # The hub still checks access: no key and no signature → 401, a stranger → 404.
        async with httpx.AsyncClient(timeout=30) as anonymous:
            assert (await anonymous.get(f"{hub.base_url}/v1/files/{file_id}/content")).status_code == 401
        stranger = await hub.new_user("mallory")
        async with authed(hub, stranger) as other:
            assert (await other.get(f"/v1/files/{file_id}/content")).status_code == 404

        redirect = await http.get(f"/v1/files/{file_id}/content")
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(f"{s3_server.endpoint}/{bucket}/files/{file_id}?")
        assert "X-Amz-Signature=" in location

        async with httpx.AsyncClient(timeout=30, follow_redirects=True) as browser:
            followed = await browser.get(shared)
        assert followed.status_code == 200 and followed.content == payload
        assert str(followed.url).startswith(s3_server.endpoint)
        # The store answers with the hub's safe headers: SVG is never served inline.
        assert followed.headers["content-disposition"].startswith("attachment")
        assert "X-Amz-Expires=60" in location  # short-lived: the client follows it at once
        # (moto cannot check a presigned URL's signature; headers-signed requests are checked
        # in test_every_signed_request_passes_a_server_that_checks_signatures.)


async def test_every_signed_request_passes_a_server_that_checks_signatures(tmp_path: Path) -> None:
    s3 = start_s3_server(tmp_path, verify_signatures=True)
    try:
        bucket = new_bucket()
        payload = os.urandom(8 * 1024 * 1024 + 1000)  # a multipart upload of two parts
        async with s3_hub(tmp_path, s3, bucket) as (hub, key), authed(hub, key) as http:
            uploaded = await http.post(
                "/v1/files", files={"file": ("big.bin", payload, "application/octet-stream")}
            )
            small = await http.post("/v1/files", files={"file": ("small.txt", b"small", "text/plain")})
            assert uploaded.status_code == 200 and small.status_code == 200, (uploaded.text, small.text)
            content = await http.get(f"/v1/files/{uploaded.json()['id']}/content")
            assert content.status_code == 200 and content.content == payload
            assert (await http.delete(f"/v1/files/{small.json()['id']}")).status_code == 200

        async with httpx.AsyncClient() as plain:
            forged = S3FileStore(
                plain, S3Config(s3.endpoint, bucket, "us-east-1", s3.access_key_id, "not-the-secret")
            )
            with pytest.raises(StorageUnavailable, match=r"\(HTTP 403\)"):
                await forged.exists(uploaded.json()["id"])
            with pytest.raises(StorageUnavailable, match=r"\(SignatureDoesNotMatch\)"):
                await forged.write("file_forged", single(b"x"))
    finally:
        s3.handle.stop()


async def test_s3_down_answers_503_busy_not_500(tmp_path: Path) -> None:
    s3 = start_s3_server(tmp_path)
    try:
        bucket = new_bucket()
        async with s3_hub(tmp_path, s3, bucket) as (hub, key), authed(hub, key) as http:
            kept = (await http.post("/v1/files", files={"file": ("a.txt", b"kept", "text/plain")})).json()[
                "id"
            ]
            s3.handle.kill()
            upload = await http.post("/v1/files", files={"file": ("b.txt", b"lost", "text/plain")})
            download = await http.get(f"/v1/files/{kept}/content")
            delete = await http.delete(f"/v1/files/{kept}")
            for answer in (upload, download, delete):
                assert answer.status_code == 503, answer.text
                assert (
                    answer.json()["error"]["type"] == "busy"
                    and "file store" in answer.json()["error"]["message"]
                )
                assert answer.headers["retry-after"]
            listed = (await http.get("/v1/files")).json()["data"]
            assert [f["id"] for f in listed] == [kept]  # a failed upload leaves no record
    finally:
        s3.handle.stop()


async def test_a_missing_bucket_is_named_in_the_503(tmp_path: Path, s3_server: S3Server) -> None:
    settings = make_settings(
        tmp_path / "data",
        s3_endpoint=s3_server.endpoint,
        s3_bucket=new_bucket(),
        s3_access_key_id="testing-access-key",
        s3_secret_access_key="testing-secret-key",
    )
    async with running_hub(settings) as hub, authed(hub, await hub.new_user("alice")) as http:
        upload = await http.post("/v1/files", files={"file": ("a.txt", b"x", "text/plain")})
    assert upload.status_code == 503 and "NoSuchBucket" in upload.json()["error"]["message"]


async def test_an_unreachable_store_raises_storage_unavailable() -> None:
    config = S3Config(f"http://127.0.0.1:{free_port()}", "bucket", "us-east-1", "key", "secret")
    async with httpx.AsyncClient() as http:
        with pytest.raises(StorageUnavailable):
            await S3FileStore(http, config).exists("file_x")


def test_s3_settings_missing_a_credential_are_refused_at_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", s3_endpoint="http://127.0.0.1:9", s3_bucket="b")
    with pytest.raises(ValueError, match="IC_S3_ACCESS_KEY_ID, IC_S3_SECRET_ACCESS_KEY"):
        build_hub(settings)


def test_s3_prefix_with_unsafe_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="s3_prefix"):
        make_settings(tmp_path / "data", s3_prefix="../other bucket")
