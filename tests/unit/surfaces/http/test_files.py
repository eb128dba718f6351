"""``/v1/files``: upload, list pages, owner-only reads, signed links, delete."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.unit.surfaces.http.conftest import BASE_URL, MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP


async def upload(
    api: InProcessHub, key: str, name: str = "notes.txt", data: bytes = b"hello"
) -> dict[str, Any]:
    answer = await api.http.post(
        "/v1/files",
        data={"purpose": "assistants"},
        files={"file": (name, data, "text/plain")},
        headers=auth(key),
    )
    assert answer.status_code == 200, answer.text
    file: dict[str, Any] = answer.json()
    return file


async def test_an_upload_answers_the_file_object_with_its_content_url(api: InProcessHub) -> None:
    key = await api.new_key()
    file = await upload(api, key, data=b"12345")
    assert file["object"] == "file" and file["bytes"] == 5 and file["filename"] == "notes.txt"
    assert file["purpose"] == "assistants" and file["content_type"] == "text/plain"
    assert file["url"] == f"{BASE_URL}/v1/files/{file['id']}/content"
    content = await api.http.get(f"/v1/files/{file['id']}/content", headers=auth(key))
    assert content.status_code == 200 and content.content == b"12345"
    assert content.headers["content-length"] == "5"


async def test_an_upload_without_a_file_part_is_400_naming_file(api: InProcessHub) -> None:
    key = await api.new_key()
    answer = await api.http.post(
        "/v1/files", files={"other": ("a.txt", b"x", "text/plain")}, headers=auth(key)
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"


async def test_the_list_pages_with_a_cursor(api: InProcessHub) -> None:
    key = await api.new_key()
    ids = [(await upload(api, key, f"f{i}.txt"))["id"] for i in range(3)]
    first = (await api.http.get("/v1/files", params={"limit": 2}, headers=auth(key))).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    assert first["first_id"] == first["data"][0]["id"] and first["last_id"] == first["data"][1]["id"]
    rest = (
        await api.http.get("/v1/files", params={"limit": 2, "after": first["last_id"]}, headers=auth(key))
    ).json()
    assert rest["has_more"] is False
    assert sorted(f["id"] for f in first["data"] + rest["data"]) == sorted(ids)


@pytest.mark.parametrize("limit", ["0", "201", "-1", "ten"])
async def test_a_limit_out_of_range_is_400_naming_limit(api: InProcessHub, limit: str) -> None:
    key = await api.new_key()
    answer = await api.http.get("/v1/files", params={"limit": limit}, headers=auth(key))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "limit"


async def test_someone_elses_file_does_not_exist_for_you(api: InProcessHub) -> None:
    owner, other = await api.new_key(), await api.new_key()
    file_id = (await upload(api, owner))["id"]
    for method, path in (
        ("GET", f"/v1/files/{file_id}"),
        ("GET", f"/v1/files/{file_id}/content"),
        ("POST", f"/v1/files/{file_id}/share"),
        ("DELETE", f"/v1/files/{file_id}"),
    ):
        answer = await api.http.request(method, path, headers=auth(other))
        assert answer.status_code == 404, (method, path)
        assert answer.json()["error"]["type"] == "not_found"
    assert (await api.http.get(f"/v1/files/{file_id}", headers=auth(owner))).status_code == 200
    assert [f["id"] for f in (await api.http.get("/v1/files", headers=auth(other))).json()["data"]] == []


async def test_content_without_a_key_or_a_signature_is_401(api: InProcessHub) -> None:
    owner = await api.new_key()
    file_id = (await upload(api, owner))["id"]
    assert (await api.http.get(f"/v1/files/{file_id}/content")).status_code == 401


async def test_a_signed_link_reads_without_a_key_and_a_tampered_one_is_404(api: InProcessHub) -> None:
    key = await api.new_key()
    file_id = (await upload(api, key, data=b"shared bytes"))["id"]
    shared = await api.http.post(f"/v1/files/{file_id}/share", json={"expires_in": 60}, headers=auth(key))
    assert shared.status_code == 200
    url = shared.json()["url"]
    query = parse_qs(urlsplit(url).query)
    assert int(query["exp"][0]) == shared.json()["expires_at"]
    opened = await api.http.get(url)
    assert opened.status_code == 200 and opened.content == b"shared bytes"
    tampered = await api.http.get(
        f"/v1/files/{file_id}/content", params={"exp": query["exp"][0], "sig": "0" * 64}
    )
    assert tampered.status_code == 404
    later = await api.http.get(
        f"/v1/files/{file_id}/content", params={"exp": int(query["exp"][0]) + 1, "sig": query["sig"][0]}
    )
    assert later.status_code == 404


@pytest.mark.parametrize("expires_in", [0, 7 * 24 * 3600 + 1, "soon"])
async def test_a_share_lifetime_out_of_range_is_400(api: InProcessHub, expires_in: object) -> None:
    key = await api.new_key()
    file_id = (await upload(api, key))["id"]
    answer = await api.http.post(
        f"/v1/files/{file_id}/share", json={"expires_in": expires_in}, headers=auth(key)
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "expires_in"


async def test_a_deleted_file_is_gone(api: InProcessHub) -> None:
    key = await api.new_key()
    file_id = (await upload(api, key))["id"]
    deleted = await api.http.delete(f"/v1/files/{file_id}", headers=auth(key))
    assert deleted.status_code == 200
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    assert (await api.http.get(f"/v1/files/{file_id}", headers=auth(key))).status_code == 404
    assert (await api.http.delete(f"/v1/files/{file_id}", headers=auth(key))).status_code == 404
