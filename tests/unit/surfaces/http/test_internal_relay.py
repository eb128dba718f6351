"""``POST /internal/relay/{provider_id}``: only a signed call from another replica reaches a tunnel here.

A signature that is missing, wrong, for another provider or head, or outside the clock
window is 401 before anything else is read; a hub that does not relay has no such route.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from inference_club.cluster.relay import (
    ANSWER_HEADER,
    FAILURE_HEADER,
    HEAD_HEADER,
    MAX_SKEW_S,
    SIGNATURE_HEADER,
    TIME_HEADER,
    ClusterSigner,
    encode_head,
)
from inference_club.services.transports.base import UpstreamRequest
from tests.conftest import make_settings
from tests.redis_db import TEST_DB, fresh_redis_url
from tests.unit.surfaces.http.conftest import MODULE_LOOP, InProcessHub, auth, in_process_hub

pytestmark = MODULE_LOOP

SECRET = "a-cluster-secret-of-enough-length-for-tests"
RELAY = "/internal/relay/"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replica(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessHub]:
    """A hub scaled out on Redis, so it relays for other replicas."""
    url = await fresh_redis_url(TEST_DB)
    settings = make_settings(
        tmp_path_factory.mktemp("replica") / "data", None, redis_url=url, cluster_secret=SECRET
    )
    async with in_process_hub(settings) as running:
        yield running


async def _empty() -> AsyncIterator[bytes]:
    yield b""


def head(model: str = "m") -> str:
    return encode_head(
        UpstreamRequest(
            service_type="llm",
            model=model,
            method="POST",
            path="/v1/chat/completions",
            headers={"content-type": "application/json"},
            body=_empty,
            request_id="req_relay",
        )
    )


def signed(
    provider_id: str, head_text: str, *, at: float | None = None, secret: str = SECRET
) -> dict[str, str]:
    timestamp = int(time.time() if at is None else at)
    return {
        HEAD_HEADER: head_text,
        TIME_HEADER: str(timestamp),
        SIGNATURE_HEADER: ClusterSigner(secret).sign(provider_id, head_text, timestamp),
    }


async def relay(hub: InProcessHub, provider_id: str, headers: dict[str, str]) -> Any:
    return await hub.http.post(RELAY + provider_id, content=b'{"model": "m"}', headers=headers)


async def test_a_hub_that_does_not_relay_has_no_such_route(api: InProcessHub) -> None:
    answer = await relay(api, "prov_x", signed("prov_x", head()))
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found"


def unsigned(headers: dict[str, str], *drop: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in drop}


@pytest.mark.parametrize(
    "forge",
    [
        lambda: unsigned(signed("prov_1", head()), SIGNATURE_HEADER),
        lambda: unsigned(signed("prov_1", head()), TIME_HEADER),
        lambda: {},
        lambda: signed("prov_1", head(), secret=SECRET + "-other"),
        lambda: signed("prov_2", head()),  # signed for another provider
        lambda: {**signed("prov_1", head()), HEAD_HEADER: head("other-model")},  # head swapped
        lambda: signed("prov_1", head(), at=time.time() - MAX_SKEW_S - 30),  # expired
        lambda: signed("prov_1", head(), at=time.time() + MAX_SKEW_S + 30),  # from the future
    ],
    ids=[
        "no-signature",
        "no-time",
        "nothing",
        "wrong-secret",
        "other-provider",
        "other-head",
        "expired",
        "future",
    ],
)
async def test_an_unsigned_or_badly_signed_call_is_401_and_logged_without_the_signature(
    replica: InProcessHub, forge: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inference_club.cluster")
    headers: dict[str, str] = forge()
    answer = await relay(replica, "prov_1", headers)
    assert answer.status_code == 401 and answer.json()["error"]["type"] == "invalid_api_key"
    assert ANSWER_HEADER not in answer.headers
    # Only the refusal's line: a slow Redis on a busy machine may add its own warnings.
    messages = [r.getMessage() for r in caplog.records if r.name == "inference_club.cluster"]
    [line] = [m for m in messages if "relay refused" in m]
    assert "prov_1" in line
    if SIGNATURE_HEADER in headers:
        assert headers[SIGNATURE_HEADER] not in line


async def test_a_signed_call_for_a_provider_unknown_here_is_502_unavailable(replica: InProcessHub) -> None:
    answer = await relay(replica, "prov_unknown", signed("prov_unknown", head()))
    assert answer.status_code == 502
    assert answer.headers[FAILURE_HEADER] == "unavailable" and ANSWER_HEADER not in answer.headers


async def test_a_signed_call_for_a_provider_without_a_tunnel_here_is_502_unavailable(
    replica: InProcessHub,
) -> None:
    key = await replica.new_key()
    beat = {"name": "rig", "transport": "tunnel", "services": [{"type": "llm", "models": [{"id": "m"}]}]}
    registered = await replica.http.post("/api/inference/agent/heartbeat", json=beat, headers=auth(key))
    provider_id = registered.json()["provider_id"]
    answer = await relay(replica, provider_id, signed(provider_id, head()))
    assert answer.status_code == 502 and answer.headers[FAILURE_HEADER] == "unavailable"


async def test_a_signed_but_malformed_head_is_400(replica: InProcessHub) -> None:
    answer = await relay(replica, "prov_1", signed("prov_1", "not-base64-json"))
    assert answer.status_code == 400 and answer.json()["error"]["param"] == HEAD_HEADER
