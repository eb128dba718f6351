"""A PostgreSQL that hangs or refuses: the hub fails fast, says so, rides it out, recovers.

The attack (or accident): the database accepts connections but answers nothing (chat
used to wait 56 s and ``/readyz`` 60 s), or refuses them (500 "Internal error" with two
tracebacks per request). A TCP proxy between a real hub process and the real PostgreSQL
plays both; one hub, agent and engine serve every test of this module, and each test
puts the proxy back to ``pass`` and waits for recovery (no restart) before it ends.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from inference_club.services.accounts import Accounts
from inference_club.settings import Settings
from inference_club.store.db import Database
from inference_club.store.migrate import migrate
from inference_club.testing.servers import ProcessHandle
from inference_club.testing.tcp_proxy import Mode, TcpProxy, ThreadedProxy, proxy_in_thread
from tests.conftest import _truncate_all, make_settings, running_hub
from tests.e2e.conftest import start_agent, start_fake_engine, start_hub, write_agent_config

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "is the database up?"}]}
CONNECT_TIMEOUT_S = 1.0
STATEMENT_TIMEOUT_S = 2.0
KEY_CACHE_TTL_S = 1.0
METRICS_TOKEN = "outage-scrape-token"


@dataclass
class Outage:
    proxy: ThreadedProxy
    hub_url: str
    hub: ProcessHandle
    direct_url: str
    agent_key: str
    client_key: str
    client_key_id: str

    def set_mode(self, mode: Mode) -> None:
        self.proxy.set_mode(mode)

    def new_key(self, name: str) -> str:
        """A key created in the database (never seen by the hub) — through the real PostgreSQL."""
        return asyncio.run(_create_key(self.direct_url, "alice", name))[0]

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.hub_url, timeout=30, headers={"Authorization": f"Bearer {key or self.client_key}"}
        )

    def log_offset(self) -> int:
        return len(self.hub.log_text())

    def log_since(self, offset: int) -> str:
        return self.hub.log_text()[offset:]

    def recover(self) -> None:
        """Back to ``pass``; the hub answers a never-seen key again without a restart."""
        self.set_mode("pass")
        fresh = self.new_key("after-recovery")
        deadline = time.monotonic() + 30
        with self.http(fresh) as http:
            while (answer := http.post("/v1/chat/completions", json=CHAT)).status_code != 200:
                assert answer.status_code == 503, answer.text
                assert time.monotonic() < deadline, f"no recovery: {answer.text}\n{self.hub.log_tail()}"
                time.sleep(0.2)
            ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "ok", ready.text


async def _create_key(url: str, username: str, name: str) -> tuple[str, str]:
    database = Database(Settings(database_url=url))
    try:
        await migrate(database)
        accounts = Accounts(database)
        if username not in {u.username for u in await accounts.list_users()}:
            await accounts.create_user(username)
        created = await accounts.create_key(username, name=name)
        return created.raw, created.key.id
    finally:
        await database.dispose()


async def _usage_rows(url: str, key_id: str) -> int:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM usage WHERE key_id = $1", key_id))
    finally:
        await conn.close()


async def test_known_providers_stay_routable_through_an_outage(
    postgres_database: str, tmp_path: Path
) -> None:
    """In process: heartbeats of a provider the hub knows are applied in memory while the
    database refuses; an unknown one is told 503 busy; the key was verified before."""
    target = urlsplit(postgres_database)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        proxied = postgres_database.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
        settings = make_settings(
            tmp_path / "data",
            proxied,
            db_connect_timeout_s=CONNECT_TIMEOUT_S,
            db_statement_timeout_s=STATEMENT_TIMEOUT_S,
        )
        async with running_hub(settings) as hub:
            key = await hub.new_user(f"carol-{secrets.token_hex(3)}")

            def beat(name: str, model: str) -> dict[str, object]:
                return {
                    "name": name,
                    "transport": "direct",
                    "callback_url": "http://127.0.0.1:9/v1",
                    "services": [{"type": "llm", "models": [{"id": model}]}],
                }

            async with httpx.AsyncClient(
                base_url=hub.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
            ) as http:
                heartbeat = "/api/inference/agent/heartbeat/"
                assert (await http.post(heartbeat, json=beat("rig", "old-model"))).status_code == 200
                await proxy.set_mode("refuse")
                try:
                    known = await http.post(heartbeat, json=beat("rig", "new-model"))
                    assert known.status_code == 200, known.text
                    listed = await http.get("/v1/models")
                    assert [m["id"] for m in listed.json()["data"]] == ["new-model"]
                    unknown = await http.post(heartbeat, json=beat("other-rig", "x"))
                    assert_busy(unknown)
                finally:
                    await proxy.set_mode("pass")


@pytest.fixture(scope="module")
def outage(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    asyncio.run(_truncate_all(postgres_database))
    agent_key, _ = asyncio.run(_create_key(postgres_database, "alice", "rig"))
    client_key, client_key_id = asyncio.run(_create_key(postgres_database, "alice", "laptop"))
    target = urlsplit(postgres_database)
    tmp: Path = tmp_path_factory.mktemp("outage")
    started: list[ProcessHandle] = []
    with proxy_in_thread(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        try:
            proxied = postgres_database.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
            hub = start_hub(
                tmp,
                env={
                    "IC_DATABASE_URL": proxied,
                    "IC_DB_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
                    "IC_DB_STATEMENT_TIMEOUT_S": str(STATEMENT_TIMEOUT_S),
                    "IC_KEY_CACHE_TTL_S": str(KEY_CACHE_TTL_S),
                    "IC_USAGE_FLUSH_INTERVAL_S": "0.2",
                    "IC_METRICS_TOKEN": METRICS_TOKEN,
                    "IC_METRICS_REFRESH_S": "0",
                },
            )
            started.append(hub.handle)
            engine, engine_url = start_fake_engine(tmp)
            started.append(engine)
            config = write_agent_config(
                tmp / "rig.toml",
                [
                    {
                        "type": "llm",
                        "url": f"{engine_url}/v1",
                        "discover": False,
                        "models": [{"id": "fake-chat"}],
                    },
                ],
            )
            agent = start_agent(tmp, hub.url, agent_key, "rig", config, transport="tunnel")
            started.append(agent)
            state = Outage(
                proxy, hub.url, hub.handle, postgres_database, agent_key, client_key, client_key_id
            )
            with state.http() as http:
                deadline = time.monotonic() + 30
                while (answer := http.post("/v1/chat/completions", json=CHAT)).status_code != 200:
                    assert time.monotonic() < deadline, f"{answer.text}\n{agent.log_tail()}"
                    time.sleep(0.1)
            yield state
        finally:
            for handle in reversed(started):
                handle.stop(timeout=3)


def timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()  # type: ignore[operator]
    assert isinstance(response, httpx.Response)
    return response, time.monotonic() - started


def assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "busy", response.text
    assert int(response.headers["retry-after"]) >= 1


def assert_readyz_names_the_database(http: httpx.Client) -> None:
    ready, took = timed(lambda: http.get("/readyz"))
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "unavailable" and body["down"] == ["database"] and body["errors"]["database"]
    assert took < CONNECT_TIMEOUT_S + 3, f"/readyz took {took:.1f}s"


def test_a_database_that_answers_nothing(outage: Outage) -> None:
    before = asyncio.run(_usage_rows(outage.direct_url, outage.client_key_id))
    new_key = outage.new_key("never-seen")
    offset = outage.log_offset()
    outage.set_mode("blackhole")
    try:
        with outage.http(new_key) as stranger, outage.http() as member:
            # A key the hub never saw cannot be checked: 503 busy within the timeouts.
            answer, took = timed(lambda: stranger.post("/v1/chat/completions", json=CHAT))
            assert_busy(answer)
            # The key lookup waits at most the connect timeout, even on a hung pooled connection.
            assert took < CONNECT_TIMEOUT_S + 3, f"503 took {took:.1f}s"
            assert_readyz_names_the_database(member)
            # Already-verified keys keep working through the live agent, past their cache TTL.
            served = 0
            deadline = time.monotonic() + 3 * KEY_CACHE_TTL_S
            while time.monotonic() < deadline:
                chat = member.post("/v1/chat/completions", json=CHAT)
                assert chat.status_code == 200, chat.text
                served += 1
                time.sleep(0.2)
            # Still fast for the stranger once the outage is known.
            again, took = timed(lambda: stranger.post("/v1/chat/completions", json=CHAT))
            assert_busy(again)
    finally:
        outage.recover()
    log = outage.log_since(offset)
    assert "Traceback" not in log and " ERROR " not in log, log
    # One line when it starts (a connection cut at the switch back may add one), never one per request.
    assert 1 <= log.count("database unavailable") <= 2, log
    # The usage of the chats served during the outage was kept and written afterwards.
    deadline = time.monotonic() + 15
    while asyncio.run(_usage_rows(outage.direct_url, outage.client_key_id)) < before + served:
        assert time.monotonic() < deadline, "usage rows of the outage were not written"
        time.sleep(0.2)


def test_a_database_that_refuses_connections(outage: Outage) -> None:
    new_key = outage.new_key("refused-then")
    offset = outage.log_offset()
    outage.set_mode("refuse")
    try:
        with outage.http(new_key) as stranger, outage.http() as member:
            for _ in range(10):
                answer, took = timed(lambda: stranger.post("/v1/chat/completions", json=CHAT))
                assert_busy(answer)
                assert took < CONNECT_TIMEOUT_S + 3, f"503 took {took:.1f}s"
                assert answer.json()["error"]["message"] != "Internal error."
            assert_readyz_names_the_database(member)
            assert member.post("/v1/chat/completions", json=CHAT).status_code == 200
            # Endpoints that need the database answer 503 too, not 500.
            jobs = member.get("/v1/jobs")
            assert_busy(jobs)
    finally:
        outage.recover()
    log = outage.log_since(offset)
    assert "Traceback" not in log and " ERROR " not in log, log
    assert 1 <= log.count("database unavailable") <= 2 and "database available again" in log, log


def _metric(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} not in:\n{text}"
    return values[0]


def test_metrics_answer_through_an_outage_and_show_it(outage: Outage) -> None:
    offset = outage.log_offset()
    scraper = httpx.Client(
        base_url=outage.hub_url, timeout=30, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with scraper, outage.http() as member:
        healthy = scraper.get("/metrics")
        assert healthy.status_code == 200 and _metric(healthy.text, "ic_metrics_database_up") == 1
        outage.set_mode("blackhole")
        try:
            assert member.post("/v1/chat/completions", json=CHAT).status_code == 200
            during = scraper.get("/metrics")
            assert during.status_code == 200, during.text
            assert _metric(during.text, "ic_metrics_database_up") == 0
            assert _metric(during.text, "ic_usage_backlog") >= 1  # the chat's row waits for the database
            assert _metric(during.text, 'ic_providers_online{transport="tunnel"}') == 1
        finally:
            outage.recover()
        deadline = time.monotonic() + 15
        while _metric((after := scraper.get("/metrics")).text, "ic_metrics_database_up") != 1:
            assert time.monotonic() < deadline, after.text
            time.sleep(0.2)
    log = outage.log_since(offset)
    assert "Traceback" not in log and " ERROR " not in log, log
