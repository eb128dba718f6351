"""One hub, one fake engine, one agent and one Chromium for the whole browser suite.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright; no browser is ever
downloaded. Every page a test opens goes through :func:`open_page`, which fails the test
on a console error or on any request to an origin other than the hub's, and saves a
screenshot under ``$IC_TEST_ARTIFACTS`` (else a temporary directory, printed).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from inference_club.agent.runner import AgentRunner
from inference_club.testing.fake_engine import FakeEngineState
from tests.conftest import RunningHub, make_settings, running_hub
from tests.integration.conftest import engine_server, run_agent, services_for

CHROMIUM = os.environ.get("IC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery"


def _playwright() -> Any:
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        pytest.fail(f"playwright is not installed (pip install -e '.[test]'): {exc}")
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make deps)")
    return async_playwright


@pytest.fixture(scope="session")
def artifacts() -> Path:
    configured = os.environ.get("IC_TEST_ARTIFACTS")
    path = Path(configured) if configured else Path(os.environ.get("TMPDIR", "/tmp")) / "ic-browser-artifacts"
    path = path / "browser"
    path.mkdir(parents=True, exist_ok=True)
    print(f"browser screenshots: {path}")
    return path


@dataclass
class Checked:
    """A page whose console errors and foreign requests are collected."""

    page: Any
    name: str
    console_errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    allow_errors: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        errors = [e for e in self.console_errors if not any(re.search(a, e) for a in self.allow_errors)]
        return [f"console error: {e}" for e in errors] + [
            f"request to another origin: {u}" for u in self.foreign
        ]


@dataclass
class BrowserEnv:
    hub: RunningHub
    engine: FakeEngineState
    engine_url: str
    browser: Any
    artifacts: Path
    alice_key: str
    bob_key: str
    admin_key: str
    agent: AgentRunner
    contexts: dict[str, Any] = field(default_factory=dict)
    pages: list[Checked] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.hub.base_url

    def http(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {key}"})

    async def context(self, who: str | None = None, *, width: int = 1100) -> Any:
        """A browser context, signed in as ``who`` through the login form (cached)."""
        key = f"{who}:{width}"
        if key in self.contexts:
            return self.contexts[key]
        context = await self.browser.new_context(viewport={"width": width, "height": 900}, base_url=self.url)
        if who is not None:
            checked = await self.open(context, "/dashboard/login", f"login-{who}-{width}")
            await checked.page.fill("#username", who)
            await checked.page.fill("#password", PASSWORD)
            async with checked.page.expect_navigation():
                await checked.page.click("button[type=submit]")
            assert checked.page.url.rstrip("/").endswith("/dashboard"), checked.page.url
            await checked.page.close()
        self.contexts[key] = context
        return context

    async def open(
        self, context: Any, path: str, name: str, *, allow_errors: list[str] | None = None
    ) -> Checked:
        page = await context.new_page()
        checked = Checked(page, name, allow_errors=list(allow_errors or []))
        origin = self.url

        def on_console(message: Any) -> None:
            if message.type == "error":
                checked.console_errors.append(message.text)

        async def gate(route: Any) -> None:
            request_url = route.request.url
            if (
                request_url.startswith(origin + "/")
                or request_url == origin
                or request_url.startswith(("data:", "blob:"))
            ):
                await route.continue_()
            else:
                checked.foreign.append(request_url)
                await route.abort()

        page.on("console", on_console)
        page.on("pageerror", lambda exc: checked.console_errors.append(f"uncaught: {exc}"))
        await page.route("**/*", gate)
        self.pages.append(checked)
        await page.goto(path)
        return checked

    async def finish(self, checked: Checked, *, full_page: bool = True) -> None:
        """Screenshot the page, then fail on console errors or foreign requests."""
        await checked.page.screenshot(path=str(self.artifacts / f"{checked.name}.png"), full_page=full_page)
        problems = checked.problems()
        await checked.page.close()
        assert not problems, f"{checked.name}: {problems}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> AsyncIterator[BrowserEnv]:
    async_playwright = _playwright()
    settings = make_settings(tmp_path_factory.mktemp("browser-hub") / "data", job_retry_base_s=0.2)
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(running_hub(settings))
        accounts = hub.hub.accounts
        await accounts.create_user("admin", password=PASSWORD, is_admin=True)
        await accounts.create_user("alice", password=PASSWORD)
        await accounts.create_user("bob", password=PASSWORD)
        keys = {
            name: (await accounts.create_key(name, name="tests")).raw for name in ("admin", "alice", "bob")
        }
        engine, engine_url = await stack.enter_async_context(engine_server())
        agent = await stack.enter_async_context(
            run_agent(hub.base_url, keys["alice"], "home-rig", services_for(engine_url), transport="tunnel")
        )
        playwright = await stack.enter_async_context(async_playwright())
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        stack.push_async_callback(browser.close)
        yield BrowserEnv(
            hub=hub,
            engine=engine,
            engine_url=engine_url,
            browser=browser,
            artifacts=artifacts,
            alice_key=keys["alice"],
            bob_key=keys["bob"],
            admin_key=keys["admin"],
            agent=agent,
        )
