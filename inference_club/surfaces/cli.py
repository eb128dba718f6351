"""The ``inference-club`` command line. Every command reads the same :class:`Settings`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from inference_club import __version__
from inference_club.errors import HubError
from inference_club.services.accounts import Accounts
from inference_club.settings import Settings, UnsafeSettings
from inference_club.store.db import Database
from inference_club.store.migrate import migrate

T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**values)
        settings.check_safe()
    except (ValidationError, UnsafeSettings) as exc:
        raise click.UsageError(f"invalid settings: {exc}") from None
    return settings


def _run(settings: Settings, work: Callable[[Accounts], Awaitable[T]]) -> T:
    async def main() -> T:
        database = Database(settings)
        try:
            await migrate(database)
            return await work(Accounts(database))
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except HubError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)


def _settings_epilog() -> str:
    names = ", ".join(f"IC_{name.upper()}" for name in Settings.model_fields)
    return f"Every setting is also an environment variable: {names}. See docs/configuration.md."


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="IC_DATA_DIR",
    show_envvar=True,
    default=None,
    help="Directory for the SQLite database and stored files [default: ./data].",
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_settings_epilog(),
)
@click.version_option(__version__, prog_name="inference-club")
def main() -> None:
    """inference-club: your own GPUs, one OpenAI-compatible API, from anywhere."""


@main.command(epilog=_settings_epilog())
@click.option("--host", envvar="IC_HOST", show_envvar=True, default=None, help="Bind address [default: 127.0.0.1].")
@click.option("--port", envvar="IC_PORT", show_envvar=True, type=int, default=None, help="Port [default: 8000].")
@data_dir_option
def serve(host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Run the hub (migrates the database first; prints an admin key on first start)."""
    import uvicorn

    from inference_club.surfaces.app import create_app

    settings = _settings(host=host, port=port, data_dir=data_dir)

    async def prepare(accounts: Accounts) -> None:
        created = await accounts.bootstrap_admin()
        if created is not None:
            click.echo("First start: created user 'admin'. Its API key (shown only this once):", err=True)
            click.echo(created.raw)

    _run(settings, prepare)
    click.echo(f"inference-club {__version__} serving on http://{settings.host}:{settings.port}", err=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )


@main.command("migrate")
@data_dir_option
def migrate_command(data_dir: Path | None) -> None:
    """Apply database migrations (serve does this too)."""
    settings = _settings(data_dir=data_dir)

    async def nothing(_: Accounts) -> None:
        return None

    _run(settings, nothing)
    click.echo("database is up to date", err=True)


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.option("--password", is_flag=True, help="Prompt for a dashboard password.")
@click.option(
    "--routing",
    type=click.Choice(["own", "own-first", "any"]),
    default="own-first",
    show_default=True,
    help="Which providers the user's requests may use.",
)
@data_dir_option
def users_create(name: str, admin: bool, password: bool, routing: str, data_dir: Path | None) -> None:
    """Create user NAME."""
    secret = click.prompt("Password", hide_input=True, confirmation_prompt=True) if password else None
    settings = _settings(data_dir=data_dir)
    user = _run(
        settings,
        lambda accounts: accounts.create_user(name, password=secret, is_admin=admin, routing_preference=routing),
    )
    click.echo(f"created user {user.username} ({user.id})", err=True)


@users.command("list")
@data_dir_option
def users_list(data_dir: Path | None) -> None:
    """List users."""
    for user in _run(_settings(data_dir=data_dir), lambda accounts: accounts.list_users()):
        flags = " admin" if user.is_admin else ""
        click.echo(f"{user.id}\t{user.username}\t{user.routing_preference}{flags}")


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--user", "username", required=True, help="Owner of the new key.")
@click.option("--name", "label", default="default", show_default=True, help="A label for the key.")
@data_dir_option
def keys_create(username: str, label: str, data_dir: Path | None) -> None:
    """Create a key; prints it alone on stdout (shown once)."""
    created = _run(_settings(data_dir=data_dir), lambda accounts: accounts.create_key(username, name=label))
    click.echo(f"created key {created.key.id} for {username}; it is shown only once", err=True)
    click.echo(created.raw)


@keys.command("list")
@click.option("--user", "username", default=None, help="Only this user's keys.")
@data_dir_option
def keys_list(username: str | None, data_dir: Path | None) -> None:
    """List keys (never the secret itself)."""
    for key, user in _run(_settings(data_dir=data_dir), lambda accounts: accounts.list_keys(username)):
        state = "revoked" if key.revoked_at else "active"
        used = key.last_used_at.isoformat() if key.last_used_at else "never"
        click.echo(f"{key.id}\t{user.username}\t{key.name}\t{key.prefix}…\t{state}\tlast used {used}")


@keys.command("revoke")
@click.argument("key_id")
@data_dir_option
def keys_revoke(key_id: str, data_dir: Path | None) -> None:
    """Revoke key KEY_ID (it stops working within seconds)."""
    _run(_settings(data_dir=data_dir), lambda accounts: accounts.revoke_key(key_id))
    click.echo(f"revoked {key_id}", err=True)


def _add_agent() -> None:
    from inference_club.agent.cli import agent_command

    main.add_command(agent_command, "agent")


_add_agent()
