"""``/v1/keys``, ``/v1/providers``, ``/v1/usage`` and the admin API, over real sockets."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from inference_club.testing.fake_state import Fault
from tests.conftest import RunningHub
from tests.integration.conftest import Stack


def _client(hub: RunningHub, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_keys_are_created_listed_and_revoked_by_their_owner(hub: RunningHub) -> None:
    alice = await hub.new_user("alice")
    bob = await hub.new_user("bob")
    async with _client(hub, alice) as http, _client(hub, bob) as bob_http:
        created = await http.post("/v1/keys", json={"name": "laptop"})
        assert created.status_code == 201
        body = created.json()
        assert body["key"].startswith("ic_") and body["name"] == "laptop" and body["object"] == "api_key"
        assert body["prefix"] == body["key"][: len(body["prefix"])] and body["revoked_at"] is None

        listed = (await http.get("/v1/keys")).json()["data"]
        assert [k["name"] for k in listed] == ["laptop", "default"]
        assert all("key" not in k for k in listed)  # never shown again

        sdk = openai.AsyncOpenAI(base_url=f"{hub.base_url}/v1", api_key=body["key"], max_retries=0)
        await sdk.models.list()

        assert (await bob_http.delete(f"/v1/keys/{body['id']}")).status_code == 404  # not bob's
        revoked = await http.delete(f"/v1/keys/{body['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        with pytest.raises(openai.AuthenticationError):
            await sdk.models.list()

        bad = await http.post("/v1/keys", json={"name": ""})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "name"


async def test_providers_show_live_state_of_my_machines_only(stack: Stack) -> None:
    other = await stack.hub.new_user("mallory")
    async with stack.http() as http, _client(stack.hub, other) as other_http:
        data = (await http.get("/v1/providers")).json()["data"]
        assert [p["name"] for p in data] == ["home-rig"]
        rig = data[0]
        assert rig["online"] is True and rig["transport"] == stack.transport
        llm = next(s for s in rig["services"] if s["type"] == "llm")
        assert llm["models"] == ["fake-chat"] and llm["in_use"] == 0 and llm["max_concurrency"] == 4
        assert (await other_http.get("/v1/providers")).json()["data"] == []


@pytest.mark.parametrize("stack", ["direct"], indirect=True)  # usage does not depend on the transport
async def test_usage_is_aggregated_by_day_and_model(stack: Stack) -> None:
    client = stack.client()
    for _ in range(3):
        await client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "hi there"}]
        )
    await client.embeddings.create(model="fake-embed", input="x")
    stack.engine.add_fault(Fault(status=400, times=1, path="/v1/chat/completions"))
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x"}])
    async with stack.http() as http:
        # Rows are recorded off the request path, some just after the client read the
        # last byte: wait until every call is in.
        for _ in range(50):
            usage = (await http.get("/v1/usage", params={"days": 7})).json()
            rows = {row["model"]: row for row in usage["data"]}
            if usage["total"]["requests"] >= 5 and rows.get("fake-chat", {}).get("requests", 0) >= 4:
                break
            await asyncio.sleep(0.1)
        assert usage["total"]["requests"] == 5, usage
        assert usage["days"] == 7 and usage["total"]["requests"] == 5 and usage["total"]["errors"] == 1
        chat = rows["fake-chat"]
        assert chat["requests"] == 4 and chat["errors"] == 1 and chat["total_tokens"] > 0
        assert chat["latency_ms_p50"] is not None and chat["latency_ms_p50"] >= 0
        assert rows["fake-embed"]["requests"] == 1 and rows["fake-embed"]["errors"] == 0
        assert (await http.get("/v1/usage", params={"days": 0})).status_code == 400


async def test_admin_user_management(hub: RunningHub) -> None:
    admin = await hub.new_user("root", admin=True)
    member = await hub.new_user("member")
    async with _client(hub, admin) as http, _client(hub, member) as member_http:
        for method, path in (
            ("GET", "/v1/admin/users"),
            ("POST", "/v1/admin/users"),
            ("GET", "/v1/admin/providers"),
        ):
            assert (await member_http.request(method, path, json={"username": "x"})).status_code == 404
        created = await http.post("/v1/admin/users", json={"username": "newbie"})
        assert created.status_code == 201
        user = created.json()
        assert user["has_password"] is False and user["disabled"] is False
        assert (await http.post("/v1/admin/users", json={"username": "newbie"})).status_code == 409
        invite = (await http.post(f"/v1/admin/users/{user['id']}/invite")).json()
        assert invite["url"].startswith(f"{hub.base_url}/dashboard/invite/")

        member_id = next(
            u["id"] for u in (await http.get("/v1/admin/users")).json()["data"] if u["username"] == "member"
        )
        disabled = await http.post(f"/v1/admin/users/{member_id}/disable")
        assert disabled.json()["disabled"] is True
        assert (await member_http.get("/v1/models")).status_code == 401  # a disabled user's keys stop
        await http.post(f"/v1/admin/users/{member_id}/enable")
        assert (await member_http.get("/v1/models")).status_code == 200
        me = next(
            u["id"] for u in (await http.get("/v1/admin/users")).json()["data"] if u["username"] == "root"
        )
        assert (await http.post(f"/v1/admin/users/{me}/disable")).status_code == 409
        assert (await http.post("/v1/admin/users/usr_nope/invite")).status_code == 404
