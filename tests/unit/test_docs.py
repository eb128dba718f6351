"""The docs are tested: every setting, CLI command and option, error type and endpoint."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import click
import pytest

from inference_club.agent.tunnel import PROTOCOL_VARIABLE
from inference_club.errors import ALL_ERRORS, HubError
from inference_club.netpool import DEFAULT_TRANSPORT, TRANSPORT_VARIABLE, TransportKind
from inference_club.settings import Settings
from inference_club.surfaces.app import create_app
from inference_club.surfaces.cli import main
from inference_club.tunnel.protocol import PROTOCOL_VERSION, SUPPORTED_VERSIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _sections(markdown: str) -> dict[str, str]:
    """``## heading`` → the text up to the next heading of level 2 or higher."""
    sections: dict[str, str] = {}
    for match in re.finditer(r"^## (.+?)\n(.*?)(?=^#{1,2} |\Z)", markdown, re.S | re.M):
        sections[match.group(1).strip()] = match.group(2)
    return sections


# --------------------------------------------------------------------------- settings


def test_every_setting_is_in_configuration_md() -> None:
    text = _read("configuration.md")
    missing = [f"IC_{name.upper()}" for name in Settings.model_fields if f"`IC_{name.upper()}`" not in text]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_configuration_md_documents_no_stale_setting() -> None:
    rows = re.findall(r"^\| `(IC_[A-Z0-9_]+)` \| `([a-z0-9_]+)` \|", _read("configuration.md"), re.M)
    assert rows, "the settings table was not found"
    assert {field for _, field in rows} == set(Settings.model_fields)
    for variable, field in rows:
        assert variable == f"IC_{field.upper()}"


def test_the_http_transport_variable_is_documented_with_every_choice() -> None:
    section = _sections(_read("configuration.md"))["HTTP client transport (hub and agent)"]
    assert f"`{TRANSPORT_VARIABLE}`" in section and f"- `{DEFAULT_TRANSPORT}` (the default):" in section
    for kind in get_args(TransportKind):
        assert re.search(rf"^- `{kind}`[ :]", section, re.M), f"{TRANSPORT_VARIABLE}={kind} is not documented"


def test_the_tunnel_protocol_variable_is_documented_with_every_version() -> None:
    section = _sections(_read("configuration.md"))["Tunnel protocol version (agent)"]
    assert f"`{PROTOCOL_VARIABLE}`" in section and f"- `{PROTOCOL_VERSION}` (the default):" in section
    for version in SUPPORTED_VERSIONS:
        assert re.search(rf"^- `{version}`[ :]", section, re.M), (
            f"{PROTOCOL_VARIABLE}={version} is not documented"
        )


# --------------------------------------------------------------------------- CLI


def _walk(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(main))
LEAVES = [(path, cmd) for path, cmd in COMMANDS if not isinstance(cmd, click.Group)]


def test_the_cli_tree_is_walked() -> None:
    names = {" ".join(path) for path, _ in LEAVES}
    assert {
        "serve",
        "migrate",
        "users create",
        "users list",
        "keys create",
        "keys list",
        "keys revoke",
        "agent",
    } <= names


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in COMMANDS if p])
def test_every_command_is_in_cli_md(path: str) -> None:
    assert f"inference-club {path}" in _read("cli.md")


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_option_of_every_command_is_in_its_section(
    path: tuple[str, ...], command: click.Command
) -> None:
    heading = f"inference-club {' '.join(path)}"
    sections = _sections(_read("cli.md"))
    assert heading in sections, f"docs/cli.md has no '## {heading}' section"
    section = sections[heading]
    for param in command.params:
        if isinstance(param, click.Argument):
            assert param.human_readable_name in section, f"{heading}: argument {param.human_readable_name}"
            continue
        assert isinstance(param, click.Option)
        for opt in [*param.opts, *param.secondary_opts]:
            if opt in ("-h", "--help"):
                continue
            assert re.search(rf"`{re.escape(opt)}[` ]", section), f"{heading}: option {opt} is not documented"
        if param.envvar:
            envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
            for envvar in envvars:
                assert f"`{envvar}`" in section, f"{heading}: {envvar} is not documented"


def test_group_options_are_documented() -> None:
    text = _read("cli.md")
    for path, command in COMMANDS:
        if isinstance(command, click.Group):
            for param in command.params:
                for opt in getattr(param, "opts", []):
                    assert f"`{opt}`" in text, f"group {path or ('inference-club',)}: {opt}"


# --------------------------------------------------------------------------- errors


def _error_rows() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in _read("errors.md").splitlines():
        match = re.match(r"^\| `(\w+)`", line)
        if match:
            rows[match.group(1)] = line
    return rows


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=[c.__name__ for c in ALL_ERRORS])
def test_every_error_type_is_in_errors_md_with_its_status(cls: type[HubError]) -> None:
    rows = _error_rows()
    assert cls.__name__ in rows, f"{cls.__name__} is missing from docs/errors.md"
    cells = [cell.strip() for cell in rows[cls.__name__].strip("|").split("|")]
    assert cells[1] == f"`{cls.type}`", f"{cls.__name__}: documented type {cells[1]} is not `{cls.type}`"
    assert cells[2] == str(cls.status), f"{cls.__name__}: documented status {cells[2]} is not {cls.status}"
    assert ("detail" in cells[3]) == (cls.shape == "detail")


def test_server_error_is_documented() -> None:
    row = _error_rows()["HubError"]
    assert f"`{HubError.type}`" in row and str(HubError.status) in row


# --------------------------------------------------------------------------- API


def _documented(text: str, method: str, path: str) -> bool:
    """A table row ``| METHOD | `path...` |`` or an inline `` `METHOD path` ``."""
    quoted = re.escape(path)
    in_table = re.search(rf"^\| {method} \| `{quoted}[`?]", text, re.M)
    inline = re.search(rf"`{method} {quoted}[`?/]", text)
    return bool(in_table or inline)


def test_every_path_of_the_app_is_in_api_md(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    text = _read("api.md")
    paths = app.openapi()["paths"]
    assert "/v1/models" in paths
    missing = [
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method in operations
        if not _documented(text, method.upper(), path)
    ]
    assert not missing, f"endpoints missing from docs/api.md: {missing}"


def test_code_and_docs_stand_on_their_own() -> None:
    """The repository is the contract its reader has: no citations of an outside spec's sections."""
    root = DOCS.parent
    files = [
        root / "README.md",
        *DOCS.rglob("*.md"),
        *(root / "inference_club").rglob("*.py"),
        *(root / "tests").rglob("*.py"),
        *(root / "bench").rglob("*.py"),
        *(root / "bench").rglob("*.md"),
    ]
    pattern = re.compile("SPEC" + r"\s*§")  # split so this file does not match itself
    cited = [str(f.relative_to(root)) for f in files if pattern.search(f.read_text(encoding="utf-8"))]
    assert not cited, f"cite docs/ instead of an outside spec in: {cited}"


# --------------------------------------------------------------------------- metrics


def test_the_grafana_dashboard_uses_only_documented_metrics() -> None:
    import json

    dashboard = json.loads(_read("grafana-dashboard.json"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name) for e in exprs for name in re.findall(r"\bic_[a-z_]+", e)
    }
    documented = set(re.findall(r"^\| `(ic_[a-z_]+)` \|", _read("operations.md"), re.M))
    assert used, "no metric found in docs/grafana-dashboard.json"
    assert used <= documented, (
        f"dashboard metrics missing from docs/operations.md: {sorted(used - documented)}"
    )
