"""The real ``inference-club`` console script, run as subprocesses on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest

from inference_club.settings import Settings
from inference_club.surfaces.cli import main
from inference_club.testing.servers import ProcessHandle, free_port

EXE = Path(sys.executable).with_name("inference-club")
KEY_RE = re.compile(r"\bic_[A-Za-z0-9_-]{40,}")
REVOCATION_S = 5.0


class Cli:
    """Runs ``inference-club`` against one data dir (and PostgreSQL when given)."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IC_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["IC_DATA_DIR"] = str(data_dir)
        if database_url:
            self.env["IC_DATABASE_URL"] = database_url

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        assert EXE.exists(), f"{EXE} is missing: install the package (make test does)"
        return subprocess.run(
            [str(EXE), *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={**self.env, **(env or {})},
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def serve(self, port: int, log: Path) -> ProcessHandle:
        return ProcessHandle([str(EXE), "serve", "--port", str(port)], log, env=self.env)


@pytest.fixture
def cli(tmp_path: Path, database_url: str | None) -> Cli:
    return Cli(tmp_path / "data", database_url)


@pytest.fixture
def hub_process(cli: Cli, tmp_path: Path) -> Iterator[tuple[ProcessHandle, str]]:
    port = free_port()
    with cli.serve(port, tmp_path / "serve-1.log") as process:
        base = f"http://127.0.0.1:{port}"
        process.wait_http(base + "/healthz", timeout=30)
        yield process, base


def _models(base: str, key: str) -> httpx.Response:
    return httpx.get(base + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)


def _key_id(cli: Cli, label: str) -> str:
    for line in cli.ok("keys", "list").stdout.splitlines():
        fields = line.split("\t")
        if fields[2] == label:
            return fields[0]
    raise AssertionError(f"no key labelled {label}")


# --------------------------------------------------------------------------- users and keys


def test_users_create_and_list(cli: Cli) -> None:
    created = cli.ok("users", "create", "alice")
    assert created.stdout == ""
    assert "alice" in created.stderr
    cli.ok("users", "create", "bob", "--admin", "--routing", "any")

    duplicate = cli.run("users", "create", "alice")
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr and "Traceback" not in duplicate.stderr
    bad = cli.run("users", "create", "not a name")
    assert bad.returncode == 1 and "username" in bad.stderr

    lines = cli.ok("users", "list").stdout.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["alice", "bob"]
    alice, bob = (line.split("\t") for line in lines)
    assert alice[0].startswith("usr_") and alice[2] == "own-first" and "admin" not in alice
    assert bob[2:] == ["any admin"]


def test_keys_create_list_revoke(cli: Cli) -> None:
    cli.ok("users", "create", "alice")
    cli.ok("users", "create", "bob")
    created = cli.ok("keys", "create", "--user", "alice", "--name", "laptop")
    key = created.stdout.strip()
    assert created.stdout == key + "\n", "keys create must print the key alone on stdout"
    assert KEY_RE.fullmatch(key)
    assert key not in created.stderr
    second = cli.ok("keys", "create", "--user", "alice").stdout.strip()
    bobs = cli.ok("keys", "create", "--user", "bob", "--name", "agent").stdout.strip()
    assert len({key, second, bobs}) == 3

    listed = cli.ok("keys", "list").stdout
    for raw in (key, second, bobs):
        assert raw not in listed
    assert "laptop" in listed and "default" in listed and "agent" in listed
    assert listed.count("\tactive\t") == 3
    only_bob = cli.ok("keys", "list", "--user", "bob").stdout.splitlines()
    assert len(only_bob) == 1 and only_bob[0].split("\t")[1] == "bob"

    key_id = _key_id(cli, "laptop")
    assert key_id.startswith("key_")
    revoked = cli.ok("keys", "revoke", key_id)
    assert key_id in revoked.stderr
    row = next(line for line in cli.ok("keys", "list").stdout.splitlines() if line.startswith(key_id))
    assert "\trevoked\t" in row

    assert cli.run("keys", "revoke", "key_nope").returncode == 1
    assert cli.run("keys", "create", "--user", "ghost").returncode == 1
    assert cli.run("keys", "list", "--user", "ghost").returncode == 1
    missing_user = cli.run("keys", "create")
    assert missing_user.returncode == 2 and "--user" in missing_user.stderr


def test_migrate(cli: Cli) -> None:
    first = cli.ok("migrate")
    assert "up to date" in first.stderr
    cli.ok("migrate")  # again: nothing to do, no error


def test_data_dir_option_wins_over_env(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other"
    cli.ok("users", "create", "alice")
    cli.ok("users", "create", "carol", "--data-dir", str(other))
    here = cli.ok("users", "list").stdout
    there = cli.ok("users", "list", "--data-dir", str(other)).stdout
    if "IC_DATABASE_URL" in cli.env:  # one database for both
        assert "alice" in here and "carol" in here
    else:
        assert "alice" in here and "carol" not in here
        assert "carol" in there and "alice" not in there


def test_users_disable_and_enable(cli: Cli) -> None:
    cli.ok("users", "create", "alice")
    disabled = cli.ok("users", "disable", "alice")
    assert "disabled alice" in disabled.stderr
    assert cli.ok("users", "list").stdout.split("\t")[2].rstrip("\n") == "own-first disabled"
    enabled = cli.ok("users", "enable", "alice")
    assert "enabled alice" in enabled.stderr
    assert "disabled" not in cli.ok("users", "list").stdout
    ghost = cli.run("users", "disable", "ghost")
    assert ghost.returncode == 1 and "ghost" in ghost.stderr and "Traceback" not in ghost.stderr


# --------------------------------------------------------------------------- serve


def test_serve_prints_admin_key_once_and_revocation_reaches_the_hub(
    cli: Cli, tmp_path: Path, hub_process: tuple[ProcessHandle, str]
) -> None:
    process, base = hub_process
    admin_keys = KEY_RE.findall(process.log_text())
    assert len(admin_keys) == 1, process.log_text()
    admin_key = admin_keys[0]
    assert _models(base, admin_key).json() == {"object": "list", "data": []}
    assert _models(base, "ic_wrong").status_code == 401

    # A user and key made by the CLI while the hub runs.
    cli.ok("users", "create", "alice")
    key = cli.ok("keys", "create", "--user", "alice", "--name", "doomed").stdout.strip()
    answer = _models(base, key)
    assert answer.status_code == 200 and answer.json() == {"object": "list", "data": []}

    # last_used_at is written by the hub's batched recorder, shortly after.
    deadline = time.monotonic() + 10
    while "last used never" in cli.ok("keys", "list", "--user", "alice").stdout:
        assert time.monotonic() < deadline, "last_used_at was never written"
        time.sleep(0.3)

    assert _models(base, key).status_code == 200  # fresh in the hub's cache
    cli.ok("keys", "revoke", _key_id(cli, "doomed"))
    revoked = time.monotonic()
    while (status := _models(base, key).status_code) == 200:
        assert time.monotonic() - revoked < REVOCATION_S + 0.5, "revoked key still accepted after 5 s"
        time.sleep(0.1)
    assert status == 401
    body = _models(base, key).json()
    assert set(body) == {"detail", "error"} and body["error"]["type"] == "invalid_api_key"
    assert _models(base, admin_key).status_code == 200

    # Disabling the user stops their other keys too, as fast; enabling brings them back.
    other = cli.ok("keys", "create", "--user", "alice", "--name", "spare").stdout.strip()
    assert _models(base, other).status_code == 200
    cli.ok("users", "disable", "alice")
    disabled = time.monotonic()
    while _models(base, other).status_code == 200:
        assert time.monotonic() - disabled < REVOCATION_S + 0.5, "a disabled user's key still works after 5 s"
        time.sleep(0.1)
    cli.ok("users", "enable", "alice")
    enabled = time.monotonic()
    while _models(base, other).status_code != 200:
        assert time.monotonic() - enabled < REVOCATION_S + 0.5, (
            "an enabled user's key still refused after 5 s"
        )
        time.sleep(0.1)

    # A second start on the same database prints no key.
    process.stop()
    port = free_port()
    with cli.serve(port, tmp_path / "serve-2.log") as second:
        second.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert _models(f"http://127.0.0.1:{port}", admin_key).status_code == 200
        assert not KEY_RE.findall(second.log_text()), second.log_text()
        assert "First start" not in second.log_text()


def test_raw_keys_never_reach_the_database_file(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data", None)
    port = free_port()
    with cli.serve(port, tmp_path / "serve.log") as process:
        process.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        [admin_key] = KEY_RE.findall(process.log_text())
        cli.ok("users", "create", "alice")
        keys = [admin_key] + [cli.ok("keys", "create", "--user", "alice").stdout.strip() for _ in range(3)]
        for key in keys:
            assert _models(f"http://127.0.0.1:{port}", key).status_code == 200
        time.sleep(1.5)  # let the recorder write last_used_at
    stored = b"".join(p.read_bytes() for p in sorted((tmp_path / "data").glob("hub.db*")))
    assert len(stored) > 4096
    for key in keys:
        assert key.encode() not in stored, "a raw key is in the database file"
        assert hashlib.sha256(key.encode()).hexdigest().encode() in stored  # the grep itself works


def test_invalid_settings_are_refused_clearly(cli: Cli) -> None:
    checks = [
        ({"IC_PORT": "not-a-port"}, "port"),
        ({"IC_PORT": "70000"}, "port"),
        ({"IC_QUEUE_TIMEOUT_S": "-3"}, "queue_timeout_s"),
        ({"IC_CALLBACK_DENY_CIDRS": "nonsense"}, "callback_deny_cidrs"),
        ({"IC_ENVIRONMENT": "production"}, "IC_SECRET_KEY"),
    ]
    for env, needle in checks:
        result = cli.run("users", "list", env=env)
        assert result.returncode == 2, (env, result.stderr)
        assert needle in result.stderr, (env, result.stderr)
        assert "Traceback" not in result.stderr
    assert cli.run("serve", env={"IC_ENVIRONMENT": "production", "IC_SECRET_KEY": "short"}).returncode == 2


# --------------------------------------------------------------------------- --help


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))


def test_help_of_every_command_lists_its_ic_variables(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data", None)
    for path, command in _commands(main):
        result = cli.ok(*path, "--help")
        text = " ".join(result.stdout.split())  # undo wrapping
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar
                for envvar in envvars:
                    assert envvar in text, f"inference-club {' '.join(path)} --help lacks {envvar}"
            if isinstance(param, click.Option):
                assert param.opts[-1] in text
        if path in ((), ("serve",)):
            for name in Settings.model_fields:
                assert f"IC_{name.upper()}" in text, (
                    f"{' '.join(path) or 'top'} --help lacks IC_{name.upper()}"
                )
