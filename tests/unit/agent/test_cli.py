"""``inference-club agent`` in process: options and their environment variables, and every
configuration problem said in one line naming the field, with exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from inference_club.agent import cli
from inference_club.agent.cli import agent_command, build_cli_config, read_key_file
from inference_club.agent.config import ConfigError

GOOD = ["--hub", "http://127.0.0.1:1", "--key", "k", "--service", "llm=http://127.0.0.1:9/v1"]


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(agent_command, args, env=env or {})


def assert_config_error(result: Result, fragment: str) -> None:
    """Exit 2, the message on one line, no traceback."""
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_help_lists_options_with_env_vars() -> None:
    result = CliRunner().invoke(agent_command, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for option, env in [
        ("--hub", "IC_AGENT_HUB"),
        ("--key", "IC_AGENT_KEY"),
        ("--name", "IC_AGENT_NAME"),
        ("--service", "IC_AGENT_SERVICE"),
        ("--config", "IC_AGENT_CONFIG"),
        ("--direct", "IC_AGENT_DIRECT"),
        ("--listen", "IC_AGENT_LISTEN"),
        ("--callback-url", "IC_AGENT_CALLBACK_URL"),
        ("--discover-interval", "IC_AGENT_DISCOVER_INTERVAL"),
    ]:
        assert option in result.output
        assert env in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--service", "llm"], "--service 'llm': expected TYPE=URL"),
        (["--service", "chat=http://a/v1"], "--service 'chat=http://a/v1': type: must be one of"),
        (["--service", "llm=ftp://a"], "url: must be an http:// or https:// URL"),
        (["--hub", "hub.example"], "--hub: must be an http:// or https:// URL"),
        (["--listen", "nope"], "--listen: expected HOST:PORT"),
        (["--config", "/nonexistent.toml"], "config file not found"),
    ],
)
def test_cli_errors_exit_2_without_traceback(args: list[str], fragment: str) -> None:
    base = ["--hub", "http://127.0.0.1:1", "--key", "k", "--service", "llm=http://127.0.0.1:9/v1"]
    result = CliRunner().invoke(agent_command, [*base, "--direct", *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_reads_env_vars_and_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('hub = "http://127.0.0.1:1"\n[[services]]\ntype = "chat"\nurl = "http://a"\n')
    result = CliRunner().invoke(agent_command, ["--config", str(path), "--direct"], env={"IC_AGENT_KEY": "k"})
    assert result.exit_code == 2
    assert f"{path}: services[0].type" in result.output


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('hub = "http://h"\nkey = ', "invalid TOML"),
        ('hubb = "http://h"', "unknown key 'hubb' (known: callback_url, connect_timeout, discover_interval"),
        ('hub = "http://h"\ndiscover_interval = -1', "discover_interval: must be greater than 0, got -1"),
        ('hub = "http://h"\ndiscover_interval = "soon"', "discover_interval: must be a number of seconds"),
        (
            'hub = "http://h"\n[[services]]\ntype = "llm"\nurl = "http://a"\nmax_concurrency = 0',
            "services[0].max_concurrency: must be at least 1, got 0",
        ),
        ('key = "k"', "hub: missing; pass --hub URL, set IC_AGENT_HUB"),
    ],
)
def test_config_file_errors_name_the_file_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    result = invoke(["--config", str(path), "--key", "k", "--service", "llm=http://127.0.0.1:9/v1"])
    assert_config_error(result, fragment)
    assert str(path) in result.output


def test_a_config_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b'hub = "\xff"')
    assert_config_error(invoke(["--config", str(path)]), f"{path}: config file is not UTF-8 text")


def test_no_services_says_how_to_add_one() -> None:
    result = invoke(["--hub", "http://127.0.0.1:1", "--key", "k"])
    assert_config_error(result, "no services: pass --service TYPE=URL")


def test_the_key_can_come_from_a_file(tmp_path: Path) -> None:
    assert read_key_file(write(tmp_path, "\n  ic-secret  \nsecond line\n", "key")) == "ic-secret"
    with pytest.raises(ConfigError, match="the file is empty; put the API key on its first line"):
        read_key_file(write(tmp_path, " \n\n", "empty"))
    with pytest.raises(ConfigError, match=r"--key-file .*missing: cannot read it"):
        read_key_file(tmp_path / "missing")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot read it"):
        read_key_file(binary)


def test_a_bad_key_file_is_a_config_error_unless_key_is_given(tmp_path: Path) -> None:
    empty = write(tmp_path, "", "key")
    base = ["--hub", "http://127.0.0.1:1", "--service", "llm=http://127.0.0.1:9/v1"]
    assert_config_error(invoke([*base, "--key-file", str(empty)]), f"--key-file {empty}: the file is empty")
    # --key wins, so the file is never read: the next problem is the one reported
    result = invoke([*base, "--key", "k", "--key-file", str(empty), "--listen", "nope"])
    assert_config_error(result, "--listen: expected HOST:PORT")
    assert "key-file" not in result.output
    result = invoke([*base, "--listen", "nope"], env={"IC_AGENT_KEY_FILE": str(write(tmp_path, "k\n", "k2"))})
    assert_config_error(result, "--listen: expected HOST:PORT")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--discover-interval", "0"], "Invalid value for '--discover-interval'"),
        (["--log-level", "loud"], "Invalid value for '--log-level'"),
        (["--log-format", "xml"], "Invalid value for '--log-format'"),
        (["--bogus"], "No such option '--bogus'"),
    ],
)
def test_option_errors_are_usage_errors(args: list[str], fragment: str) -> None:
    result = invoke([*GOOD, *args])
    assert result.exit_code == 2 and fragment in result.output and "Usage:" in result.output


def test_metrics_need_a_token() -> None:
    result = invoke([*GOOD, "--metrics-listen", "127.0.0.1:0"])
    assert_config_error(result, "--metrics-listen: the metrics endpoint needs a token")


def test_command_line_values_override_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'hub = "http://file-hub"\nkey = "file-key"\nname = "file-rig"\ndiscover_interval = 5\n'
        '[[services]]\ntype = "image"\nurl = "http://127.0.0.1:7860"\nengine = "a1111"\n',
    )
    config = build_cli_config(
        config_path=path,
        hub="http://flag-hub",
        key=None,
        name=None,
        services=("llm=http://127.0.0.1:11434/v1",),
        direct=True,
        listen="127.0.0.1:0",
        callback_url=None,
        discover_interval=None,
        metrics_listen="127.0.0.1:9100",
        metrics_token="t",
    )
    assert (config.hub, config.key, config.name, config.discover_interval_s) == (
        "http://flag-hub",
        "file-key",
        "file-rig",
        5.0,
    )
    assert (config.transport, config.listen_host, config.listen_port) == ("direct", "127.0.0.1", 0)
    assert config.metrics_listen == ("127.0.0.1", 9100) and config.metrics_token == "t"
    assert [(s.type, s.url, s.engine) for s in config.services] == [
        ("image", "http://127.0.0.1:7860", "a1111"),
        ("llm", "http://127.0.0.1:11434/v1", "openai"),
    ]
    tunnel = build_cli_config(
        config_path=path,
        hub=None,
        key=None,
        name="flag-rig",
        services=[],
        direct=False,
        listen=None,
        callback_url=None,
        discover_interval=2.5,
    )
    assert (tunnel.transport, tunnel.name, tunnel.discover_interval_s) == ("tunnel", "flag-rig", 2.5)


def test_main_runs_the_command_under_its_public_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m inference_club.agent", "--help"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("Usage: inference-club agent [OPTIONS]")
