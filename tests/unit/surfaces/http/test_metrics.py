"""``GET /metrics``: the metrics token or an administrator's key; 401 for everyone else."""

from __future__ import annotations

import pytest

from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth

pytestmark = MODULE_LOOP

TOKEN = "metrics-token-for-unit-tests"


@pytest.fixture(scope="module")
def hub_overrides() -> dict[str, object]:
    return {"metrics_token": TOKEN, "metrics_refresh_s": 0.0}


def assert_refused(status: int, body: dict[str, object]) -> None:
    assert status == 401
    error = body["error"]
    assert isinstance(error, dict) and error["type"] == "invalid_api_key"


async def test_the_metrics_token_reads_prometheus_text(api: InProcessHub) -> None:
    await api.http.get("/healthz")
    answer = await api.http.get("/metrics", headers=auth(TOKEN))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "# TYPE " in answer.text and "/healthz" in answer.text


async def test_an_administrators_key_reads_them_too(api: InProcessHub) -> None:
    admin = await api.new_key("admin", admin=True)
    answer = await api.http.get("/metrics", headers=auth(admin))
    assert answer.status_code == 200 and "# TYPE " in answer.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dG9rZW4="}], ids=["none", "basic"])
async def test_no_bearer_token_is_401_naming_what_is_needed(
    api: InProcessHub, headers: dict[str, str]
) -> None:
    answer = await api.http.get("/metrics", headers=headers)
    assert_refused(answer.status_code, answer.json())
    assert "IC_METRICS_TOKEN" in answer.json()["error"]["message"]


async def test_a_users_key_a_wrong_token_and_a_token_prefix_are_401(api: InProcessHub) -> None:
    user = await api.new_key()
    for presented in (user, TOKEN + "x", TOKEN[:-1], "nonsense"):
        answer = await api.http.get("/metrics", headers=auth(presented))
        assert_refused(answer.status_code, answer.json())
