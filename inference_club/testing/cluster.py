"""A scaled-out hub on loopback, all real processes: the scale-out suite and its benchmark.

One :class:`Cluster` is a fresh PostgreSQL database, a private ``redis-server``, a ``moto``
S3 server, N ``inference-club serve`` replicas, Debian's ``nginx`` in front of them (an
unprivileged process with a generated config: random balancing, WebSocket upgrade for
agent tunnels, no buffering for streams), a fake engine and agents whose tunnels go
through nginx. :func:`nginx_config` is the same configuration ``docs/deployment.md`` shows.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from inference_club.testing.processes import start_agent, start_fake_engine, start_hub, write_agent_config
from inference_club.testing.s3_server import S3Server, start_s3_server
from inference_club.testing.servers import ProcessHandle, free_port, wait_http

POSTGRES_ADMIN_DSN = os.environ.get("IC_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TUNNEL_PATH = "/api/inference/agent/tunnel"
LIMITED_MODEL = "fake-limited"  # served by the first agent only, at most LIMITED_CONCURRENCY at once
LIMITED_CONCURRENCY = 4

# Service type → fake model (and features) every agent serves.
AGENT_MODELS: dict[str, tuple[str, list[str]]] = {
    "llm": ("fake-chat", ["streaming", "tools"]),
    "embedding": ("fake-embed", []),
    "stt": ("fake-whisper", ["timestamps"]),
    "tts": ("fake-tts", []),
    "image": ("fake-image", []),
}


class ClusterUnavailable(RuntimeError):
    """A part the cluster needs (PostgreSQL, nginx, redis-server, moto) is missing or down."""


def find_binary(name: str) -> str:
    """``name`` on PATH, or in /usr/sbin (Debian's nginx is not on a user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        raise ClusterUnavailable(f"{name} is not installed (Debian package: {name}; `make deps` as root)")
    return found


def nginx_config(*, listen: str, replicas: Sequence[str], prefix: Path | None = None) -> str:
    """nginx.conf balancing ``listen`` over ``replicas`` (``host:port`` each).

    With ``prefix`` the pid, logs and temporary files live under it and nginx stays in the
    foreground (a child process of the test); without, it is the plain production shape.
    """
    process = ""
    temp = ""
    if prefix is not None:
        process = (
            f"daemon off;\nmaster_process on;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        )
        temp = "".join(
            f"    {kind}_temp_path {prefix}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
    servers = "".join(f"        server {address} max_fails=1 fail_timeout=2s;\n" for address in replicas)
    forwarded = (
        "            proxy_set_header Host $http_host;\n"
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "            proxy_set_header X-Forwarded-Proto $scheme;\n"
    )
    return f"""{process}worker_processes auto;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
{temp}    upstream hub_replicas {{
        random;
{servers}        keepalive 128;
    }}
    server {{
        listen {listen};
        # Uploads (audio, images, files) stream to a replica as they arrive.
        client_max_body_size 1g;
        proxy_request_buffering off;
        # Streams (SSE chat, job events, media) reach the client chunk by chunk.
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
        # A replica that refuses the connection is skipped; nothing is sent twice.
        proxy_next_upstream error timeout;
        proxy_next_upstream_tries 3;

        location / {{
{forwarded}            proxy_set_header Connection "";
            proxy_pass http://hub_replicas;
        }}

        # Agent tunnels: a WebSocket per agent, lasting for days.
        location {TUNNEL_PATH} {{
{forwarded}            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1d;
            proxy_send_timeout 1d;
            proxy_pass http://hub_replicas;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    handle: ProcessHandle
    url: str
    prefix: Path

    @classmethod
    def start(cls, tmp: Path, replicas: Sequence[str]) -> Nginx:
        binary = find_binary("nginx")
        prefix = tmp / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(listen=f"127.0.0.1:{port}", replicas=replicas, prefix=prefix))
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / kind).mkdir(exist_ok=True)
            (prefix / kind).chmod(0o777)  # workers drop to `nobody` when the master runs as root
        handle = ProcessHandle(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            prefix / "stdout.log",
        )
        url = f"http://127.0.0.1:{port}"
        try:
            handle.wait_http(url, timeout=15)
        except BaseException:
            handle.stop()
            raise
        return cls(handle, url, prefix)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class RedisServer:
    """A private ``redis-server`` (no persistence) that a test may stop and start again."""

    port: int
    directory: Path
    handle: ProcessHandle | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = find_binary("redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.handle = ProcessHandle(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            self.directory / "redis.log",
        )
        deadline = time.monotonic() + 15
        while not self.ping():
            if not self.handle.is_running() or time.monotonic() > deadline:
                raise ClusterUnavailable(f"redis-server did not start:\n{self.handle.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.kill()  # an outage, not a shutdown
            self.handle.stop()
            self.handle = None

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)


@dataclass
class Replica:
    index: int
    port: int
    data_dir: Path
    replica_id: str
    handle: ProcessHandle | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        return self.handle is not None and self.handle.is_running()


@dataclass
class Cluster:
    tmp: Path
    database_name: str
    database_url: str
    redis: RedisServer
    s3: S3Server
    bucket: str
    secret: str
    admin_key: str = ""
    replicas: list[Replica] = field(default_factory=list)
    nginx: Nginx | None = None
    engine: ProcessHandle | None = None
    engine_url: str = ""
    agents: list[ProcessHandle] = field(default_factory=list)
    hub_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    # --- processes ------------------------------------------------------------------------

    def replica_env(self, replica: Replica) -> dict[str, str]:
        return {
            "IC_DATABASE_URL": self.database_url,
            "IC_REDIS_URL": self.redis.url,
            "IC_INTERNAL_URL": replica.url,
            "IC_CLUSTER_SECRET": self.secret,
            "IC_REPLICA_ID": replica.replica_id,
            "IC_SECRET_KEY": self.secret,  # signed file links must verify on every replica
            "IC_PUBLIC_URL": self.url if self.nginx else replica.url,
            **self.s3.env(self.bucket, prefix="files/"),
            **self.hub_env,
        }

    def start_replica(self, replica: Replica) -> None:
        # Generous: on a loaded 2-core machine a replica's start (imports, migrations) takes tens of seconds.
        process = start_hub(
            self.tmp,
            port=replica.port,
            data_dir=replica.data_dir,
            env=self.replica_env(replica),
            name=replica.replica_id,
            timeout=120,
        )
        replica.handle = process.handle
        if process.key and not self.admin_key:
            self.admin_key = process.key

    def kill_replica(self, replica: Replica) -> None:
        assert replica.handle is not None
        replica.handle.kill()
        replica.handle.stop()

    def restart_replica(self, replica: Replica) -> None:
        if replica.handle is not None:
            replica.handle.stop()
        self.start_replica(replica)

    def start_agent(self, name: str, *, limited: bool) -> ProcessHandle:
        services: list[dict[str, object]] = [
            {
                "type": kind,
                "url": f"{self.engine_url}/v1",
                "max_concurrency": 16,
                "discover": False,
                "models": [{"id": model, "features": features}],
            }
            for kind, (model, features) in AGENT_MODELS.items()
        ]
        if limited:
            services.append(
                {
                    "type": "llm",
                    "url": f"{self.engine_url}/v1",
                    "max_concurrency": LIMITED_CONCURRENCY,
                    "discover": False,
                    "models": [{"id": LIMITED_MODEL, "features": ["streaming"]}],
                }
            )
        config = write_agent_config(self.tmp / f"agent-{name}.toml", services)
        handle = start_agent(self.tmp, self.url, self.admin_key, name, config, transport="tunnel")
        self.agents.append(handle)
        return handle

    # --- state ----------------------------------------------------------------------------

    async def new_key(self, name: str = "scaleout") -> tuple[str, str]:
        """A fresh API key of the admin (who owns the agents): ``(key id, raw key)``."""
        from inference_club.services.accounts import Accounts
        from inference_club.settings import Settings
        from inference_club.store.db import Database

        database = Database(Settings(database_url=self.database_url, data_dir=self.tmp / "keys"))
        try:
            created = await Accounts(database).create_key("admin", name=name)
        finally:
            await database.dispose()
        return created.key.id, created.raw

    def wait_until_served(self, models: Sequence[str], timeout: float = 60.0) -> None:
        """Every running replica lists every model in ``models``."""
        deadline = time.monotonic() + timeout
        pending = {r.replica_id for r in self.replicas if r.is_running()}
        while pending:
            for replica in self.replicas:
                if replica.replica_id in pending and set(models) <= self.models_on(replica):
                    pending.discard(replica.replica_id)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"{sorted(pending)} never listed {list(models)}\n{self.logs()}")
            time.sleep(0.2)

    def models_on(self, replica: Replica) -> set[str]:
        try:
            answer = httpx.get(
                f"{replica.url}/v1/models", headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=5
            )
            return {m["id"] for m in answer.json().get("data", [])}
        except (httpx.HTTPError, ValueError):
            return set()

    def tunnel_owner(self) -> Replica | None:
        """The replica holding an agent's tunnel, as the replicas advertise it in Redis."""
        ids = {r.replica_id.encode(): r for r in self.replicas}
        client = self.redis.client()
        try:
            for key in client.scan_iter(match="ic:*tunnel*", count=1000):
                kind = client.type(key)
                values: list[bytes] = []
                if kind == b"string":
                    values = [client.get(key) or b""]
                elif kind == b"hash":
                    values = list(client.hgetall(key).values())
                elif kind == b"set":
                    values = list(client.smembers(key))
                elif kind == b"zset":  # e.g. ic:tunnels:<provider>: the replicas holding its tunnels
                    values = list(client.zrange(key, 0, -1))
                for value in values:
                    if value in ids and ids[value].is_running():
                        return ids[value]
        finally:
            client.close()
        return None

    def logs(self, lines: int = 30) -> str:
        parts = []
        for replica in self.replicas:
            if replica.handle is not None:
                parts.append(f"--- {replica.replica_id}\n{replica.handle.log_tail(lines)}")
        for agent in self.agents:
            parts.append(f"--- {agent.describe()}\n{agent.log_tail(lines)}")
        if self.nginx is not None:
            parts.append(f"--- nginx\n{self.nginx.error_log()[-3000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for handle in reversed(self.agents):
            handle.stop(timeout=3)
        for replica in self.replicas:
            if replica.handle is not None:
                replica.handle.stop(timeout=5)
        if self.nginx is not None:
            self.nginx.handle.stop(timeout=3)
        if self.engine is not None:
            self.engine.stop(timeout=3)
        self.s3.handle.stop(timeout=3)
        self.redis.stop()
        with suppress(Exception):
            asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)'))


async def _postgres_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def running_cluster(
    tmp: Path,
    *,
    replicas: int = 3,
    agents: int = 2,
    hub_env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    """Start everything, wait until every replica serves the agents' models, stop it all after."""
    database_name = f"ic_scaleout_{secrets.token_hex(4)}"
    try:
        asyncio.run(_postgres_admin(f'CREATE DATABASE "{database_name}"'))
    except Exception as exc:
        raise ClusterUnavailable(f"PostgreSQL at {POSTGRES_ADMIN_DSN} is not reachable: {exc!r}") from exc
    find_binary("nginx")
    redis = RedisServer(free_port(), tmp / "redis")
    s3: S3Server | None = None
    cluster: Cluster | None = None
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:  # the machine may have 2 cores: overlap start-ups
            s3_starting = pool.submit(start_s3_server, tmp)
            engine_starting = pool.submit(start_fake_engine, tmp)
            redis.start()
            redis.client().flushdb()
            s3 = s3_starting.result()
            cluster = Cluster(
                tmp=tmp,
                database_name=database_name,
                database_url=f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{database_name}",
                redis=redis,
                s3=s3,
                bucket=f"ic-scaleout-{secrets.token_hex(4)}",
                secret=secrets.token_urlsafe(32),
                hub_env=dict(hub_env or {}),
            )
            cluster.engine, cluster.engine_url = engine_starting.result()
            asyncio.run(s3.create_bucket(cluster.bucket))
            cluster.replicas = [
                Replica(i, free_port(), tmp / f"replica-{i}", f"replica-{i}") for i in range(1, replicas + 1)
            ]
            # nginx first (its URL is every replica's public URL); it answers 502 until they are up.
            cluster.nginx = Nginx.start(tmp, [r.address for r in cluster.replicas])
            # The first replica migrates the empty database and prints the admin key; the
            # others then start together on the migrated database.
            cluster.start_replica(cluster.replicas[0])
            for started in [pool.submit(cluster.start_replica, r) for r in cluster.replicas[1:]]:
                started.result()
        if not cluster.admin_key:
            raise ClusterUnavailable(f"no admin key in the first replica's log\n{cluster.logs()}")
        for number in range(agents):
            cluster.start_agent(f"rig-{number + 1}", limited=number == 0)
        cluster.wait_until_served(
            [model for model, _ in AGENT_MODELS.values()] + [LIMITED_MODEL], timeout=120
        )
        wait_http(f"{cluster.url}/healthz", timeout=10)
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        else:
            if s3 is not None:
                s3.handle.stop()
            redis.stop()
            with suppress(Exception):
                asyncio.run(_postgres_admin(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)'))
