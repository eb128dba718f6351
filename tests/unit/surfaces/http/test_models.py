"""``/v1/models``: one entry per reachable model id; retrieve by id (slashes included) or 404."""

from __future__ import annotations

from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP


async def test_a_model_served_twice_is_listed_once(api: InProcessHub) -> None:
    key = await api.new_key()
    await api.heartbeat(key, "rig-a", {"llm": ["shared-model", "only-a"]})
    await api.heartbeat(key, "rig-b", {"llm": ["shared-model"], "embedding": ["shared-model"]})
    answer = await api.http.get("/v1/models", headers=auth(key))
    assert answer.status_code == 200
    ids = [m["id"] for m in answer.json()["data"]]
    assert sorted(ids) == ["only-a", "shared-model"]
    [shared] = [m for m in answer.json()["data"] if m["id"] == "shared-model"]
    assert set(shared["service_types"]) == {"llm", "embedding"} and shared["object"] == "model"


async def test_retrieve_answers_the_listed_entry_even_with_a_slash_in_the_id(api: InProcessHub) -> None:
    key = await api.new_key()
    await api.heartbeat(key, "rig", {"llm": ["org/model-7b"]})
    listed = (await api.http.get("/v1/models", headers=auth(key))).json()["data"]
    answer = await api.http.get("/v1/models/org/model-7b", headers=auth(key))
    assert answer.status_code == 200 and answer.json() == listed[0]
    for near in ("org/model", "org/model-7b-chat", "org", "ORG/model-7b"):
        assert (await api.http.get(f"/v1/models/{near}", headers=auth(key))).status_code == 404, near


async def test_an_unknown_or_unreachable_model_is_404_naming_model(api: InProcessHub) -> None:
    owner = await api.new_key(routing="own")
    await api.heartbeat(owner, "private-rig", {"llm": ["owners-model"]}, visibility="private")
    other = await api.new_key(routing="any")
    for model in ("nobody-serves-this", "owners-model"):
        answer = await api.http.get(f"/v1/models/{model}", headers=auth(other))
        assert answer.status_code == 404
        assert answer.json()["error"]["type"] == "not_found" and answer.json()["error"]["param"] == "model"
    assert "owners-model" not in repr((await api.http.get("/v1/models", headers=auth(other))).json())


async def test_models_need_a_key(api: InProcessHub) -> None:
    assert (await api.http.get("/v1/models")).status_code == 401
    assert (await api.http.get("/v1/models/anything")).status_code == 401
