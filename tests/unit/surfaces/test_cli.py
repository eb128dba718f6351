"""The command line, run in-process: users, passwords from standard input, keys, invites,
and errors that exit non-zero with one clear line."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from inference_club import __version__
from inference_club.services.accounts import Accounts
from inference_club.services.invites import Invites
from inference_club.store.db import Database
from inference_club.surfaces.cli import main
from inference_club.testing.servers import free_port
from tests.conftest import make_settings

PASSWORD = "correct horse battery"


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.runner = CliRunner()

    def run(self, *args: str, stdin: str | None = None, **env: str) -> Result:
        return self.runner.invoke(
            main, list(args), input=stdin, env={"IC_DATA_DIR": str(self.data_dir), **env}
        )

    def ok(self, *args: str, stdin: str | None = None, **env: str) -> Result:
        result = self.run(*args, stdin=stdin, **env)
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    def password_works(self, username: str, password: str) -> bool:
        async def check() -> bool:
            database = Database(make_settings(self.data_dir))
            try:
                return await Accounts(database).verify_password(username, password) is not None
            finally:
                await database.dispose()

        return asyncio.run(check())


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name in [n for n in os.environ if n.startswith("IC_")]:  # the machine's own settings stay out
        monkeypatch.delenv(name)
    return Cli(tmp_path / "data")


def test_users_are_created_with_a_password_read_from_standard_input(cli: Cli) -> None:
    made = cli.ok(
        "users", "create", "alice", "--admin", "--routing", "any", "--password", stdin=PASSWORD + "\n"
    )
    assert made.stderr.startswith("created user alice (usr_") and made.stdout == ""
    cli.ok("users", "create", "bob")
    listed = cli.ok("users", "list").stdout.splitlines()
    assert [line.split("\t")[1:] for line in listed] == [["alice", "any admin"], ["bob", "own-first"]]
    assert cli.password_works("alice", PASSWORD)  # without the line end


def test_set_password_reads_one_line_and_needs_one(cli: Cli) -> None:
    cli.ok("users", "create", "alice")
    done = cli.ok("users", "set-password", "alice", stdin="a brand new secret\r\nnext line\n")
    assert "password of alice set" in done.stderr
    assert cli.password_works("alice", "a brand new secret")

    empty = cli.run("users", "set-password", "alice", stdin="")
    assert empty.exit_code == 2 and "no password on standard input" in empty.stderr
    unknown = cli.run("users", "set-password", "carol", stdin=PASSWORD + "\n")
    assert unknown.exit_code == 1 and unknown.stderr.strip() == "error: no user named 'carol'"
    short = cli.run("users", "create", "dave", "--password", stdin="short\n")
    assert short.exit_code == 1 and short.stderr.startswith("error: password must be")
    assert "Traceback" not in short.output


def test_keys_are_printed_once_listed_by_prefix_and_revoked(cli: Cli) -> None:
    cli.ok("users", "create", "alice")
    made = cli.ok("keys", "create", "--user", "alice", "--name", "laptop")
    raw = made.stdout.strip()
    assert made.stdout == raw + "\n" and raw.startswith("ic_")  # the key alone on stdout
    key_id = made.stderr.split()[2]
    listed = cli.ok("keys", "list", "--user", "alice").stdout
    assert key_id in listed and "laptop" in listed and "active" in listed and raw not in listed
    assert raw[:9] in listed  # its prefix only
    cli.ok("keys", "revoke", key_id)
    assert "revoked" in cli.ok("keys", "list").stdout

    missing = cli.run("keys", "revoke", "key_nope")
    assert missing.exit_code == 1 and missing.stderr.strip() == "error: no key with id 'key_nope'"
    nobody = cli.run("keys", "create", "--user", "carol")
    assert nobody.exit_code == 1 and "no user named 'carol'" in nobody.stderr and nobody.stdout == ""


def test_revoking_with_redis_gone_warns_but_succeeds(cli: Cli) -> None:
    cli.ok("users", "create", "alice")
    key_id = cli.ok("keys", "create", "--user", "alice").stderr.split()[2]
    done = cli.ok("keys", "revoke", key_id, IC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert "warning: Redis is unreachable" in done.stderr


def test_an_invite_link_points_at_the_public_url_and_works(cli: Cli) -> None:
    cli.ok("users", "create", "alice")
    invited = cli.ok("users", "invite", "alice", IC_PUBLIC_URL="https://hub.example/")
    url = invited.stdout.strip()
    assert url.startswith("https://hub.example/dashboard/invite/") and "expires" in invited.stderr

    async def accept() -> str:
        database = Database(make_settings(cli.data_dir))
        try:
            accounts = Accounts(database)
            return (
                await Invites(database, accounts, ttl_s=60).accept(url.rsplit("/", 1)[1], PASSWORD)
            ).username
        finally:
            await database.dispose()

    assert asyncio.run(accept()) == "alice"
    # Without a public URL, the address serve binds to (a wildcard becomes loopback).
    local = cli.ok("users", "invite", "alice", IC_HOST="0.0.0.0", IC_PORT="8123").stdout
    assert local.startswith("http://127.0.0.1:8123/dashboard/invite/")


def test_errors_are_one_line_and_exit_non_zero(cli: Cli) -> None:
    cli.ok("users", "create", "alice")
    again = cli.run("users", "create", "alice")
    assert again.exit_code == 1 and again.stderr.strip() == "error: user 'alice' already exists"
    bad_name = cli.run("users", "create", "not a name")
    assert bad_name.exit_code == 1 and bad_name.stderr.startswith("error: username must be")
    unsafe = cli.run("users", "list", IC_ENVIRONMENT="production")
    assert unsafe.exit_code == 2 and "invalid settings: IC_SECRET_KEY must be set" in unsafe.stderr
    invalid = cli.run("migrate", IC_ONLINE_WINDOW_S="soon")
    assert invalid.exit_code == 2 and "invalid settings" in invalid.stderr
    assert cli.run("users", "create").exit_code == 2  # click's own usage error


def test_migrate_and_version(cli: Cli) -> None:
    assert "database is up to date" in cli.ok("migrate").stderr
    assert (cli.data_dir / "hub.db").exists()
    assert __version__ in cli.ok("--version").stdout
