"""The ``inference-club`` command line. Every command reads the same :class:`Settings`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from inference_club import __version__
from inference_club.errors import HubError
from inference_club.fdlimit import raise_open_file_limit
from inference_club.services.accounts import Accounts
from inference_club.services.invites import Invites, invite_url
from inference_club.services.revocation import Subject
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
    return _run_with_invites(settings, lambda accounts, _: work(accounts))


def _run_with_invites(settings: Settings, work: Callable[[Accounts, Invites], Awaitable[T]]) -> T:
    async def main() -> T:
        database = Database(settings)
        try:
            await migrate(database)
            accounts = Accounts(database)
            return await work(accounts, Invites(database, accounts, ttl_s=settings.invite_ttl_s))
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except HubError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)


def _hub_url(settings: Settings) -> str:
    """Where people reach the hub: ``IC_PUBLIC_URL``, else the address ``serve`` binds to."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def _read_password() -> str:
    """Prompt twice on a terminal; otherwise read one line from standard input (scripts)."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    line = sys.stdin.readline()
    if not line:
        raise click.UsageError("no password on standard input")
    return line.rstrip("\r\n")


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
@click.option(
    "--host", envvar="IC_HOST", show_envvar=True, default=None, help="Bind address [default: 127.0.0.1]."
)
@click.option(
    "--port", envvar="IC_PORT", show_envvar=True, type=int, default=None, help="Port [default: 8000]."
)
@data_dir_option
def serve(host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Run the hub (migrates the database first; prints an admin key on first start)."""
    import uvicorn

    from inference_club.heap import settle_heap
    from inference_club.http_server import HttpProtocol, WebSocketProtocol
    from inference_club.surfaces.app import create_app

    settings = _settings(host=host, port=port, data_dir=data_dir)
    raise_open_file_limit()  # every client, agent and event stream holds a descriptor

    async def prepare(accounts: Accounts, invites: Invites) -> None:
        created = await accounts.bootstrap_admin()
        if created is not None:
            click.echo("First start: created user 'admin'. Its API key (shown only this once):", err=True)
            click.echo(created.raw)
            invite = await invites.create(created.key.user_id)
            click.echo(
                "Set the admin's dashboard password here (one use, expires "
                f"{invite.expires_at:%Y-%m-%d %H:%M} UTC):",
                err=True,
            )
            click.echo(invite_url(_hub_url(settings), invite.token), err=True)

    _run_with_invites(settings, prepare)
    click.echo(f"inference-club {__version__} serving on http://{settings.host}:{settings.port}", err=True)
    app = create_app(settings)
    settle_heap()  # what startup built, out of the collector's walks
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # The hub logs one line per request itself, in IC_LOG_FORMAT; uvicorn's lines go through the same handler.
        access_log=False,
        log_config=None,
        loop="uvloop",
        http=HttpProtocol,  # uvicorn's httptools protocol, an answer's head sent with its body
        ws=WebSocketProtocol,  # uvicorn's, with a tunnel's messages delivered as they are read
        timeout_graceful_shutdown=10,
        # Longer than the clients in front keep idle connections (nginx upstream keepalive
        # 60 s, other replicas' relay client 5 s), so they close first: a request sent on a
        # connection this side is closing fails unretried (a 502 for a POST).
        timeout_keep_alive=75,
        # No "server: uvicorn": it tells a scanner what to try, and costs every answer a header.
        server_header=False,
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C before uvicorn took over the signals
        _serve_until_stopped(config)
    click.echo("inference-club stopped", err=True)


def _serve_until_stopped(config: Any) -> None:
    """Run uvicorn; exit normally (status 0) after a graceful shutdown on Ctrl-C or SIGTERM.

    uvicorn re-raises the signal once it has shut down, so the process would die "of" it
    and ``make run`` would report ``make: *** [run] Interrupt`` for a normal stop.
    """
    import uvicorn

    class CleanExitServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()

    CleanExitServer(config).run()


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
@click.option(
    "--password",
    is_flag=True,
    help="Set a dashboard password: prompted on a terminal, else read from standard input.",
)
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
    secret = _read_password() if password else None
    settings = _settings(data_dir=data_dir)
    user = _run(
        settings,
        lambda accounts: accounts.create_user(
            name, password=secret, is_admin=admin, routing_preference=routing
        ),
    )
    click.echo(f"created user {user.username} ({user.id})", err=True)


@users.command("list")
@data_dir_option
def users_list(data_dir: Path | None) -> None:
    """List users."""
    for user in _run(_settings(data_dir=data_dir), lambda accounts: accounts.list_users()):
        flags = (" admin" if user.is_admin else "") + (" disabled" if user.disabled_at else "")
        click.echo(f"{user.id}\t{user.username}\t{user.routing_preference}{flags}")


@users.command("set-password")
@click.argument("name")
@data_dir_option
def users_set_password(name: str, data_dir: Path | None) -> None:
    """Set user NAME's dashboard password (prompted, or one line of standard input)."""
    secret = _read_password()

    async def work(accounts: Accounts) -> None:
        user = await accounts.get_user_by_name(name)
        await accounts.set_password(user.id, secret)

    _run(_settings(data_dir=data_dir), work)
    click.echo(f"password of {name} set; their older dashboard sessions have ended", err=True)


@users.command("disable")
@click.argument("name")
@data_dir_option
def users_disable(name: str, data_dir: Path | None) -> None:
    """Disable user NAME: their keys stop working and they cannot sign in (until enabled)."""
    _set_disabled(name, True, data_dir)


@users.command("enable")
@click.argument("name")
@data_dir_option
def users_enable(name: str, data_dir: Path | None) -> None:
    """Enable user NAME again after ``users disable``."""
    _set_disabled(name, False, data_dir)


def _set_disabled(name: str, disabled: bool, data_dir: Path | None) -> None:
    settings = _settings(data_dir=data_dir)

    async def work(accounts: Accounts) -> str:
        user = await accounts.get_user_by_name(name)
        await accounts.set_disabled(user.id, disabled)
        return user.id

    user_id = _run(settings, work)
    click.echo(f"{'disabled' if disabled else 'enabled'} {name}", err=True)
    if settings.redis_url:
        _announce(settings.redis_url, "user", user_id)


@users.command("invite")
@click.argument("name")
@data_dir_option
def users_invite(name: str, data_dir: Path | None) -> None:
    """Print a one-time link that lets user NAME set their dashboard password."""
    settings = _settings(data_dir=data_dir)

    async def work(accounts: Accounts, invites: Invites) -> tuple[str, str]:
        created = await invites.create((await accounts.get_user_by_name(name)).id)
        return invite_url(_hub_url(settings), created.token), f"{created.expires_at:%Y-%m-%d %H:%M} UTC"

    url, expires = _run_with_invites(settings, work)
    click.echo(f"invite for {name}; it works once and expires {expires}", err=True)
    click.echo(url)


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
    settings = _settings(data_dir=data_dir)
    _run(settings, lambda accounts: accounts.revoke_key(key_id))
    click.echo(f"revoked {key_id}", err=True)
    if settings.redis_url:
        _announce(settings.redis_url, "key", key_id)


def _announce(redis_url: str, subject: Subject, ident: str) -> None:
    """Tell running replicas at once; without Redis they notice within the key cache TTL."""
    from inference_club.cluster.revocation import announce

    if not asyncio.run(announce(redis_url, subject, ident)):
        click.echo(
            "warning: Redis is unreachable; running hubs notice the change within the key cache TTL",
            err=True,
        )


def _add_agent() -> None:
    from inference_club.agent.cli import agent_command

    main.add_command(agent_command, "agent")


_add_agent()
