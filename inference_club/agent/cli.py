"""``inference-club agent``: run an agent next to local model servers.

The hub's CLI group adds :data:`agent_command` as ``agent``; ``python -m
inference_club.agent`` runs it alone. Configuration errors are printed as one line
naming the field and exit with status 2 (never a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from inference_club.fdlimit import raise_open_file_limit
from inference_club.heap import settle_heap
from inference_club.redact import install_log_redaction
from inference_club.telemetry.logformat import LOG_FORMATS, configure_logging

from .config import DEFAULT_LISTEN, AgentConfig, ConfigError, load_config
from .runner import TransportUnavailable, run_agent, transport_factory

__all__ = ["agent_command", "build_cli_config", "main", "read_key_file"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def build_cli_config(
    *,
    config_path: str | Path | None,
    hub: str | None,
    key: str | None,
    name: str | None,
    services: tuple[str, ...] | list[str],
    direct: bool,
    listen: str | None,
    callback_url: str | None,
    discover_interval: float | None,
    metrics_listen: str | None = None,
    metrics_token: str | None = None,
) -> AgentConfig:
    """The config from the file (if any) with command-line values on top."""
    return load_config(
        config_path,
        overrides={
            "hub": hub,
            "key": key,
            "name": name,
            "transport": "direct" if direct else None,
            "listen": listen,
            "callback_url": callback_url,
            "discover_interval": discover_interval,
            "metrics_listen": metrics_listen,
            "metrics_token": metrics_token,
        },
        services=list(services),
    )


@click.command(
    "agent",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--hub",
    envvar="IC_AGENT_HUB",
    show_envvar=True,
    metavar="URL",
    help="Base URL of the hub, e.g. https://hub.example.org.",
)
@click.option(
    "--key",
    envvar="IC_AGENT_KEY",
    show_envvar=True,
    metavar="KEY",
    help="Your API key on the hub (sent to the hub only).",
)
@click.option(
    "--key-file",
    envvar="IC_AGENT_KEY_FILE",
    show_envvar=True,
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the API key from this file (first line), so it does not show in `ps`; "
    "--key wins when both are given.",
)
@click.option(
    "--name",
    envvar="IC_AGENT_NAME",
    show_envvar=True,
    metavar="NAME",
    help="This provider's name on the hub (unique per user; default: host name).",
)
@click.option(
    "--service",
    "services",
    multiple=True,
    envvar="IC_AGENT_SERVICE",
    show_envvar=True,
    metavar="TYPE=URL",
    help="A local server, e.g. llm=http://127.0.0.1:11434/v1; repeatable. TYPE is "
    "llm, embedding, stt, tts, image, music, video or mesh. Same as a [[services]] "
    "entry with defaults; added after the config file's services.",
)
@click.option(
    "--config",
    "config_path",
    envvar="IC_AGENT_CONFIG",
    show_envvar=True,
    metavar="FILE",
    help="TOML config file (agent.toml); options given here win.",
)
@click.option(
    "--direct",
    is_flag=True,
    default=False,
    envvar="IC_AGENT_DIRECT",
    show_envvar=True,
    help="Use the direct transport: serve HTTP on --listen and let the hub call "
    "--callback-url. Without it the agent dials out to the hub over the tunnel "
    "(the default; no listening port).",
)
@click.option(
    "--listen",
    envvar="IC_AGENT_LISTEN",
    show_envvar=True,
    metavar="HOST:PORT",
    help=f"Where the direct transport listens (default {DEFAULT_LISTEN}; port 0 picks a free port).",
)
@click.option(
    "--callback-url",
    envvar="IC_AGENT_CALLBACK_URL",
    show_envvar=True,
    metavar="URL",
    help="The URL the hub uses to reach this agent (default: http://HOST:PORT of --listen).",
)
@click.option(
    "--discover-interval",
    type=click.FloatRange(min=0, min_open=True),
    envvar="IC_AGENT_DISCOVER_INTERVAL",
    show_envvar=True,
    metavar="SECONDS",
    help="How often local servers are re-polled for their models (default 60).",
)
@click.option(
    "--metrics-listen",
    envvar="IC_AGENT_METRICS_LISTEN",
    show_envvar=True,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (relayed requests, engine time and "
    "errors per service, tunnel state). Needs --metrics-token.",
)
@click.option(
    "--metrics-token",
    envvar="IC_AGENT_METRICS_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Bearer token a scraper must send to GET /metrics (prefer the environment variable: "
    "it does not show in `ps`).",
)
@click.option(
    "--log-level",
    type=click.Choice(_LOG_LEVELS),
    default="info",
    envvar="IC_AGENT_LOG_LEVEL",
    show_envvar=True,
    show_default=True,
    help="Logging verbosity.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    envvar="IC_AGENT_LOG_FORMAT",
    show_envvar=True,
    show_default=True,
    help="text: readable lines with key=value fields; json: one JSON object per line.",
)
def agent_command(
    hub: str | None,
    key: str | None,
    key_file: Path | None,
    name: str | None,
    services: tuple[str, ...],
    config_path: str | None,
    direct: bool,
    listen: str | None,
    callback_url: str | None,
    discover_interval: float | None,
    metrics_listen: str | None,
    metrics_token: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Run an agent: relay the hub's requests to model servers on this machine."""
    try:
        if key is None and key_file is not None:
            key = read_key_file(key_file)
        config = build_cli_config(
            config_path=config_path,
            hub=hub,
            key=key,
            name=name,
            services=services,
            direct=direct,
            listen=listen,
            callback_url=callback_url,
            discover_interval=discover_interval,
            metrics_listen=metrics_listen,
            metrics_token=metrics_token,
        )
        transport_factory(config.transport)
    except (ConfigError, TransportUnavailable) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)

    _setup_logging(log_level, log_format)
    try:
        _run_on_fastest_loop(run_agent(config))
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


def read_key_file(path: Path) -> str:
    """The key on the first line of ``path``; a ConfigError naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--key-file {path}: cannot read it ({exc})") from None
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        raise ConfigError(f"--key-file {path}: the file is empty; put the API key on its first line")
    return first


def _run_on_fastest_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop where it is installed (it ships with uvicorn[standard]): less CPU per relayed request."""
    raise_open_file_limit()  # each relayed request holds a connection to its engine
    settle_heap()  # the imported code and the configuration, out of the collector's walks
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(main)
        return
    uvloop.run(main)


def _setup_logging(level: str, log_format: str = "text") -> None:
    configure_logging(level, log_format, stream=sys.stderr)
    install_log_redaction()  # the hub key and the agent secret never reach a log line
    if level != "debug":
        for noisy in ("httpx", "httpcore", "uvicorn.error"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    """Entry point of ``python -m inference_club.agent``."""
    agent_command(prog_name="inference-club agent")
