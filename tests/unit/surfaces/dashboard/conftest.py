"""One in-process hub per test module for the dashboard's tests, and browsers signed in to it.

Tests share the hub, so each makes users of its own (``Site.user`` adds a random suffix)
and, for sign-in attempts, browses from an address of its own (the throttle counts by
address too). A browser is signed in by a session cookie the app's own signer issues,
exactly what a successful sign-in sets, so only the sign-in tests pay for password hashing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.services.container import Hub
from inference_club.services.sessions import SESSION_COOKIE
from inference_club.store import jobs as jobs_q
from inference_club.store.tables import Batch, Job, StoredFile, User
from inference_club.surfaces.dashboard.security import Dashboard
from tests.conftest import make_settings
from tests.unit.surfaces.conftest import BASE_URL, InProcessHub, in_process

CSRF_IN_PAGE = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery"
PICTURE = b"\x89PNG\r\n\x1a\n not really a picture"


@dataclass
class Browser:
    client: httpx.AsyncClient
    csrf: str  # the token the signed-in pages carry
    cookie: str  # the session cookie's value

    def with_csrf(self) -> dict[str, str]:
        return {"x-csrf-token": self.csrf}


@dataclass
class Site:
    running: InProcessHub

    @property
    def hub(self) -> Hub:
        return self.running.hub

    @property
    def dashboard(self) -> Dashboard:
        dashboard: Dashboard = self.running.app.state.dashboard
        return dashboard

    async def user(self, prefix: str = "u", *, admin: bool = False, password: str | None = None) -> User:
        name = f"{prefix}-{secrets.token_hex(3)}"
        return await self.hub.accounts.create_user(name, is_admin=admin, password=password)

    def anonymous(self, address: str = "10.0.0.1", **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.running.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)

    def signed_in(self, user: User, **headers: str) -> Browser:
        cookie, session = self.dashboard.signer.issue(user.id, user.password_hash)
        client = self.anonymous(**headers)
        client.cookies.set(SESSION_COOKIE, cookie)
        return Browser(client, self.dashboard.signer.csrf_token(session.nonce), cookie)

    async def job(self, user: User, *, status: str = "QUEUED", **fields: object) -> Job:
        now = utcnow()
        values: dict[str, object] = {
            "id": new_id("job"),
            "user_id": user.id,
            "endpoint": "chat.completions",
            "model": "m",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            "status": status,
            "attempts": 0,
            "max_attempts": 3,
            "request_id": "req_1",
            "base_url": BASE_URL,
            "files": [],
            "created_at": now,
            "queued_at": now,
            # Far in the future: the hub's dispatcher leaves it alone.
            "run_after": now.replace(year=now.year + 1),
            **fields,
        }
        job = Job(**values)
        async with self.hub.database.transaction() as session:
            await jobs_q.add_jobs(session, jobs=[job])
        return job

    async def batch(self, user: User) -> Batch:
        """A batch of one queued job."""
        batch = Batch(
            id=new_id("batch"), user_id=user.id, label=f"label-{user.username}", total=1, created_at=utcnow()
        )
        async with self.hub.database.transaction() as session:
            await jobs_q.add_batch(session, batch=batch)
        await self.job(user, batch_id=batch.id)
        return batch

    async def file(self, user: User, content_type: str = "image/png", data: bytes = PICTURE) -> StoredFile:
        return await self.hub.files.save(
            user_id=user.id, data=data, content_type=content_type, purpose="output", filename="pic.png"
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    settings = make_settings(
        tmp_path_factory.mktemp("dashboard") / "data",
        login_max_failures=3,
        allow_private_callbacks=True,  # the workflow tests' machines "listen" on loopback
    )
    async with in_process(settings) as running:
        yield Site(running)


def csrf_of(page: httpx.Response) -> str:
    found = CSRF_IN_PAGE.search(page.text)
    assert found, page.text
    return found.group(1)
