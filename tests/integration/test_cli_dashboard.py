"""Dashboard passwords and invite links from the command line (real subprocesses)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from inference_club.services.accounts import Accounts
from inference_club.services.invites import Invites
from inference_club.settings import Settings
from inference_club.store.db import Database
from inference_club.testing.servers import free_port
from tests.integration.test_cli import EXE, KEY_RE, Cli

INVITE_RE = re.compile(r"(http://\S+/dashboard/invite/([A-Za-z0-9_-]+))")


@pytest.fixture
def cli(tmp_path: Path, database_url: str | None) -> Cli:
    return Cli(tmp_path / "data", database_url)


def _with_stdin(cli: Cli, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args], input=stdin, capture_output=True, text=True, timeout=60, env=cli.env
    )


def _settings(cli: Cli) -> Settings:
    return Settings(data_dir=cli.data_dir, database_url=cli.env.get("IC_DATABASE_URL"))


async def _check(cli: Cli, username: str, password: str) -> bool:
    database = Database(_settings(cli))
    try:
        return await Accounts(database).verify_password(username, password) is not None
    finally:
        await database.dispose()


async def _invited(cli: Cli, token: str) -> str:
    database = Database(_settings(cli))
    try:
        return (await Invites(database, Accounts(database), ttl_s=60).peek(token)).username
    finally:
        await database.dispose()


def test_passwords_come_from_standard_input_when_it_is_not_a_terminal(cli: Cli) -> None:
    created = _with_stdin(cli, "first password\n", "users", "create", "bob", "--password")
    assert created.returncode == 0, created.stderr
    assert asyncio.run(_check(cli, "bob", "first password"))

    changed = _with_stdin(cli, "second password\n", "users", "set-password", "bob")
    assert changed.returncode == 0 and "bob" in changed.stderr
    assert asyncio.run(_check(cli, "bob", "second password"))
    assert not asyncio.run(_check(cli, "bob", "first password"))

    short = _with_stdin(cli, "short\n", "users", "set-password", "bob")
    assert short.returncode == 1 and "8-1024 characters" in short.stderr and "Traceback" not in short.stderr
    empty = _with_stdin(cli, "", "users", "set-password", "bob")
    assert empty.returncode == 2 and "standard input" in empty.stderr
    ghost = _with_stdin(cli, "whatever password\n", "users", "set-password", "ghost")
    assert ghost.returncode == 1 and "ghost" in ghost.stderr


def test_users_invite_prints_a_one_time_link(cli: Cli) -> None:
    cli.ok("users", "create", "carol")
    made = cli.ok("users", "invite", "carol")
    url = made.stdout.strip()
    match = INVITE_RE.fullmatch(url)
    assert match and url.startswith("http://127.0.0.1:8000/dashboard/invite/"), made.stdout
    assert "once" in made.stderr
    assert asyncio.run(_invited(cli, match.group(2))) == "carol"

    public = cli.run("users", "invite", "carol", env={"IC_PUBLIC_URL": "https://hub.example.org/"})
    assert public.stdout.startswith("https://hub.example.org/dashboard/invite/")
    assert cli.run("users", "invite", "ghost").returncode == 1


def test_the_first_start_prints_the_admins_invite_link(cli: Cli, tmp_path: Path) -> None:
    port = free_port()
    with cli.serve(port, tmp_path / "serve.log") as process:
        base = f"http://127.0.0.1:{port}"
        process.wait_http(base + "/healthz", timeout=30)
        log = process.log_text()
        assert len(KEY_RE.findall(log)) == 1  # the API key is still printed, once
        match = INVITE_RE.search(log)
        assert match and match.group(1).startswith(f"{base}/dashboard/invite/"), log
        page = httpx.get(match.group(1), timeout=10)
        assert page.status_code == 200 and "Welcome, admin" in page.text
