"""The agent's configuration: a TOML file (format in the README and docs/agent-protocol.md) merged with command-line values.

Everything is validated in one place, :func:`build_config`, which raises
:class:`ConfigError` with a message that names the offending field and where it came
from (``agent.toml: services[0].url: ...`` or ``--service 'llm=...': ...``). The CLI
prints that message and exits 2.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "DEFAULT_LISTEN",
    "ENGINES",
    "SERVICE_TYPES",
    "TRANSPORTS",
    "AgentConfig",
    "ConfigError",
    "ModelConfig",
    "ServiceConfig",
    "Transport",
    "build_config",
    "load_config",
    "parse_listen",
    "parse_service_option",
    "read_config_file",
]

ServiceTypeName = Literal["llm", "embedding", "stt", "tts", "image", "music", "video", "mesh"]
SERVICE_TYPES: tuple[str, ...] = get_args(ServiceTypeName)
ENGINES: tuple[str, ...] = (
    "openai",
    "ollama",
    "llamacpp",
    "vllm",
    "lmstudio",
    "comfyui",
    "a1111",
    "acestep",
    "whispercpp",
    "dia",
    "hunyuan3d",
    "trellis",
)
"""Engines this agent has an adapter for. Any other name is reported at start and its
service is left out; the agent keeps serving the others."""
Transport = Literal["tunnel", "direct"]
TRANSPORTS: tuple[str, ...] = get_args(Transport)
DEFAULT_TRANSPORT: Transport = "tunnel"
DEFAULT_LISTEN = "127.0.0.1:9000"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field and its source."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A model the operator declared for a service, with its capabilities."""

    id: str
    context_length: int | None = None
    features: tuple[str, ...] | None = None
    input_modalities: tuple[str, ...] | None = None
    output_modalities: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """One local model server behind the agent (a ``[[services]]`` entry)."""

    type: str
    url: str
    engine: str = "openai"
    max_concurrency: int = 4
    api_key: str = field(default="", repr=False)
    discover: bool = True
    models: tuple[ModelConfig, ...] = ()
    timeout_s: float | None = None
    """How long one engine job may run (native adapters); None: the agent's request_timeout."""
    poll_interval_s: float = 1.0
    """How often native adapters poll an engine for status and progress."""
    workflows: str | None = None
    """ComfyUI: the folder of workflow files."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The whole agent configuration, validated."""

    hub: str
    key: str = field(repr=False)
    name: str
    services: tuple[ServiceConfig, ...]
    transport: Transport = DEFAULT_TRANSPORT
    listen_host: str = "127.0.0.1"
    listen_port: int = 9000
    callback_url: str | None = None
    discover_interval_s: float = 60.0
    request_timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    shutdown_grace_s: float = 30.0
    metrics_listen: tuple[str, int] | None = None
    """Where ``GET /metrics`` is served (host, port); None: no metrics endpoint."""
    metrics_token: str = field(default="", repr=False)

    @property
    def heartbeat_url(self) -> str:
        return self.hub.rstrip("/") + "/api/inference/agent/heartbeat/"


# --------------------------------------------------------------------------- reading


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML file into a dict, turning I/O and syntax errors into ConfigError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None


def parse_service_option(value: str) -> dict[str, Any]:
    """Parse one ``--service TYPE=URL`` value into a ``[[services]]``-shaped dict."""
    type_, sep, url = value.partition("=")
    if not sep or not type_.strip() or not url.strip():
        raise ConfigError(f"--service {value!r}: expected TYPE=URL, e.g. llm=http://127.0.0.1:11434/v1")
    return {"type": type_.strip(), "url": url.strip()}


def parse_listen(value: str, *, label: str = "listen") -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into a host and a port (0 = any)."""
    text = value.strip()
    host: str
    port_text: str
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(f"{label}: expected HOST:PORT, got {value!r}")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"{label}: expected HOST:PORT, got {value!r}")
        if ":" in host:
            raise ConfigError(f"{label}: write IPv6 hosts in brackets, e.g. [::1]:9000")
    if not host:
        raise ConfigError(f"{label}: expected HOST:PORT, got {value!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{label}: port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    services: Sequence[str] = (),
) -> AgentConfig:
    """Read the optional TOML file, apply command-line values, validate.

    ``overrides`` holds top-level keys (``hub``, ``key``, ``name``, ``transport``,
    ``listen``, ``callback_url``, ``discover_interval``, ...); ``None`` values are
    ignored, others replace the file's. ``services`` are ``TYPE=URL`` strings appended
    after the file's ``[[services]]`` (one with the same type and URL as a file entry
    is dropped: the file's entry, with its declared models, wins).
    """
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        data = read_config_file(path)
        source = str(path)
    return build_config(
        data,
        overrides=overrides,
        service_options=[parse_service_option(s) for s in services],
        service_option_labels=[f"--service {s!r}" for s in services],
        source=source,
    )


# --------------------------------------------------------------------------- validation
#
# The file's and the command line's values are validated by pydantic models in strict mode
# (a string is no number, 1 is no boolean). Each field's type carries the sentence a
# person reads when the value is wrong; :func:`_config_error` puts the field's source in
# front of it.


def _explain(message: str, **by_error: str) -> WrapValidator:
    """Replace pydantic's wording for one field type: ``by_error`` per error type, else ``message``.

    Messages may use ``{input}`` (the value given) and the error's context (``{gt}``, ...).
    """

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["loc"]:  # about an item inside this value: that item's own words
                raise
            template = by_error.get(first["type"], message)
            context = {**first.get("ctx", {}), "input": repr(value) if isinstance(value, str) else value}
            raise PydanticCustomError("config", template.format(**context)) from None

    return WrapValidator(validate)


def _http_url(value: str) -> str:
    text = value.strip()
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise PydanticCustomError("config", f"invalid URL {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise PydanticCustomError("config", f"must be an http:// or https:// URL, got {text!r}")
    if not parts.hostname:
        raise PydanticCustomError("config", f"URL has no host: {text!r}")
    if parts.query or parts.fragment:
        raise PydanticCustomError("config", f"URL must not have a query or fragment: {text!r}")
    return text


_Text = Annotated[str, Field(strict=True), _explain("must be a string"), AfterValidator(str.strip)]
_Url = Annotated[str, Field(strict=True), _explain("must be a string URL"), AfterValidator(_http_url)]
_Flag = Annotated[bool, Field(strict=True), _explain("must be true or false")]
_Seconds = Annotated[
    float,
    Field(strict=True, gt=0),
    _explain("must be a number of seconds", greater_than="must be greater than 0, got {input}"),
]
_SecondsOrZero = Annotated[
    float,
    Field(strict=True, ge=0),
    _explain("must be a number of seconds", greater_than_equal="must not be negative, got {input}"),
]
_Concurrency = Annotated[
    int,
    Field(strict=True, ge=1),
    _explain("must be an integer", greater_than_equal="must be at least 1, got {input}"),
]
_ContextLength = Annotated[int, Field(strict=True, ge=1), _explain("must be a positive integer")]
_Name = Annotated[str, Field(strict=True, min_length=1), _explain("must be a non-empty string")]
_Names = Annotated[list[_Name], Field(strict=True), _explain("must be a list of strings")]
_Folder = Annotated[
    str, Field(strict=True, min_length=1), _explain("must be a folder path"), AfterValidator(str.strip)
]


class _Entry(BaseModel):
    """A TOML table: unknown keys are errors, blank strings count as not given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_missing(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise PydanticCustomError("config", "must be a table")
        return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}


class _ModelEntry(_Entry):
    id: _Text
    context_length: _ContextLength | None = None
    features: _Names | None = None
    input_modalities: _Names | None = None
    output_modalities: _Names | None = None


class _ServiceEntry(_Entry):
    type: Annotated[ServiceTypeName, _explain(f"must be one of {', '.join(SERVICE_TYPES)}, got {{input}}")]
    url: _Url
    engine: _Text = "openai"
    max_concurrency: _Concurrency = 4
    api_key: _Text = ""
    discover: _Flag = True
    models: Annotated[list[_ModelEntry], _explain("must be an array of tables ([[services.models]])")] = []
    timeout: _Seconds | None = None
    poll_interval: _Seconds = 1.0
    workflows: _Folder | None = None


class _FileEntry(_Entry):
    """The top level of the file, command-line values merged in."""

    hub: _Url
    key: _Text
    name: _Text | None = None
    transport: Annotated[Transport, _explain(f"must be one of {', '.join(TRANSPORTS)}, got {{input}}")] = (
        DEFAULT_TRANSPORT
    )
    listen: Annotated[str, Field(strict=True), _explain("must be a string HOST:PORT")] = DEFAULT_LISTEN
    callback_url: _Url | None = None
    discover_interval: _Seconds = 60.0
    request_timeout: _Seconds = 600.0
    connect_timeout: _Seconds = 10.0
    shutdown_grace: _SecondsOrZero = 30.0
    metrics_listen: Annotated[str, Field(strict=True), _explain("must be a string HOST:PORT")] | None = None
    metrics_token: _Text = ""
    services: Annotated[list[Any], _explain("must be an array of tables ([[services]])")] = []


_TOP_LEVEL_KEYS = frozenset(_FileEntry.model_fields)
_HINTS = {
    "hub": 'pass --hub URL, set IC_AGENT_HUB, or put hub = "https://..." in the config file',
    "key": 'pass --key KEY, set IC_AGENT_KEY, or put key = "..." in the config file',
}


def _config_error(exc: ValidationError, label: Callable[[str], str], entry: type[_Entry]) -> ConfigError:
    """The first problem, as ``<where>: <field>: <what is wrong>`` (unknown keys first)."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = list(first["loc"])
    if first["type"] == "extra_forbidden":
        unknown, loc = loc[-1], loc[:-1]
        known = (_ModelEntry if loc else entry).model_fields  # the only nested tables are a service's models
        where = _where(loc, label)
        return ConfigError(f"{where}: unknown key {unknown!r} (known: {', '.join(sorted(known))})")
    where = _where(loc, label)
    if first["type"] == "missing":
        hint = _HINTS.get(str(loc[-1])) if len(loc) == 1 else None
        return ConfigError(f"{where}: missing" + (f"; {hint}" if hint else ""))
    return ConfigError(f"{where}: {first['msg']}")


def _where(loc: Sequence[int | str], label: Callable[[str], str]) -> str:
    if not loc:
        return label("")
    text = label(str(loc[0]))
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def build_config(
    data: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    service_options: Sequence[Mapping[str, Any]] = (),
    service_option_labels: Sequence[str] | None = None,
    source: str = "config",
) -> AgentConfig:
    """Validate a config mapping (as read from TOML) merged with overrides."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table at the top level")
    merged: dict[str, Any] = dict(data)
    flags: dict[str, str] = {}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in _TOP_LEVEL_KEYS or k == "services":
            raise ConfigError(f"unknown setting {k!r}")
        merged[k] = v
        flags[k] = f"--{k.replace('_', '-')}"

    def top_label(key: str) -> str:
        return flags.get(key) or (f"{source}: {key}" if key else source)

    try:
        top = _FileEntry.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, top_label, _FileEntry) from None
    host, port = parse_listen(top.listen, label=top_label("listen"))
    if top.transport == "direct" and top.callback_url is None and _is_wildcard(host):
        raise ConfigError(
            f"{top_label('listen')}: {host!r} listens on every interface, so the hub's URL "
            "for this agent cannot be derived from it; pass --callback-url URL"
        )

    metrics_listen: tuple[str, int] | None = None
    if top.metrics_listen:
        metrics_listen = parse_listen(top.metrics_listen, label=top_label("metrics_listen"))
        if not top.metrics_token:
            raise ConfigError(
                f"{top_label('metrics_listen')}: the metrics endpoint needs a token; pass --metrics-token, "
                'set IC_AGENT_METRICS_TOKEN, or put metrics_token = "..." in the config file'
            )

    entries: list[tuple[str, str, Any]] = [
        (f"{source}: services[{i}]", ".", raw) for i, raw in enumerate(top.services)
    ]
    opt_labels = list(service_option_labels or [])
    entries += [
        (opt_labels[i] if i < len(opt_labels) else f"--service[{i}]", ": ", raw)
        for i, raw in enumerate(service_options)
    ]
    services: list[ServiceConfig] = []
    for label, sep, raw in entries:
        svc = _service(raw, label, sep)
        from_file = sep == "."
        if from_file or not any(s.type == svc.type and s.url == svc.url for s in services):
            services.append(svc)
    if not services:
        raise ConfigError(
            "no services: pass --service TYPE=URL (e.g. llm=http://127.0.0.1:11434/v1) "
            "or add a [[services]] table to the config file"
        )

    return AgentConfig(
        hub=top.hub,
        key=top.key,
        name=top.name or _default_name(),
        services=tuple(services),
        transport=top.transport,
        listen_host=host,
        listen_port=port,
        callback_url=top.callback_url,
        discover_interval_s=top.discover_interval,
        request_timeout_s=top.request_timeout,
        connect_timeout_s=top.connect_timeout,
        shutdown_grace_s=top.shutdown_grace,
        metrics_listen=metrics_listen,
        metrics_token=top.metrics_token,
    )


def _service(raw: Any, label: str, sep: str) -> ServiceConfig:
    def service_label(key: str) -> str:
        return f"{label}{sep}{key}" if key else label

    try:
        entry = _ServiceEntry.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, service_label, _ServiceEntry) from None
    seen: set[str] = set()
    for j, m in enumerate(entry.models):
        if m.id in seen:
            raise ConfigError(f"{service_label('models')}[{j}].id: duplicate model id {m.id!r}")
        seen.add(m.id)
    return ServiceConfig(
        type=entry.type,
        url=entry.url.rstrip("/"),
        engine=entry.engine,
        max_concurrency=entry.max_concurrency,
        api_key=entry.api_key,
        discover=entry.discover,
        models=tuple(
            ModelConfig(
                id=m.id,
                context_length=m.context_length,
                features=_tuple(m.features),
                input_modalities=_tuple(m.input_modalities),
                output_modalities=_tuple(m.output_modalities),
            )
            for m in entry.models
        ),
        timeout_s=entry.timeout,
        poll_interval_s=entry.poll_interval,
        workflows=entry.workflows,
    )


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _default_name() -> str:
    return socket.gethostname() or "agent"
