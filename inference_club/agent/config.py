"""The agent's configuration: a TOML file (SPEC §11) merged with command-line values.

Everything is validated in one place, :func:`build_config`, which raises
:class:`ConfigError` with a message that names the offending field and where it came
from (``agent.toml: services[0].url: ...`` or ``--service 'llm=...': ...``). The CLI
prints that message and exits 2.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

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

SERVICE_TYPES: tuple[str, ...] = (
    "llm",
    "embedding",
    "stt",
    "tts",
    "image",
    "music",
    "video",
    "mesh",
)
ENGINES: tuple[str, ...] = ("openai", "ollama", "llamacpp", "vllm", "lmstudio")
Transport = Literal["tunnel", "direct"]
TRANSPORTS: tuple[str, ...] = ("tunnel", "direct")
DEFAULT_TRANSPORT: Transport = "tunnel"
DEFAULT_LISTEN = "127.0.0.1:9000"

_TOP_LEVEL_KEYS = frozenset(
    {
        "hub",
        "key",
        "name",
        "transport",
        "listen",
        "callback_url",
        "discover_interval",
        "request_timeout",
        "connect_timeout",
        "shutdown_grace",
        "services",
    }
)
_SERVICE_KEYS = frozenset(
    {"type", "url", "engine", "max_concurrency", "api_key", "discover", "models"}
)
_MODEL_KEYS = frozenset(
    {"id", "context_length", "features", "input_modalities", "output_modalities"}
)


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
        raise ConfigError(
            f"--service {value!r}: expected TYPE=URL, e.g. llm=http://127.0.0.1:11434/v1"
        )
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
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} "
            f"(known: {', '.join(sorted(_TOP_LEVEL_KEYS))})"
        )
    merged: dict[str, Any] = dict(data)
    labels: dict[str, str] = {k: f"{source}: {k}" for k in _TOP_LEVEL_KEYS}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in _TOP_LEVEL_KEYS or k == "services":
            raise ConfigError(f"unknown setting {k!r}")
        merged[k] = v
        labels[k] = f"--{k.replace('_', '-')}"

    hub = _url(merged.get("hub"), labels["hub"], required=True, hint=_HUB_HINT)
    assert hub is not None
    key = _str(merged.get("key"), labels["key"], required=True, hint=_KEY_HINT)
    name = _str(merged.get("name"), labels["name"], required=False) or _default_name()
    transport = _choice(merged.get("transport", DEFAULT_TRANSPORT), labels["transport"], TRANSPORTS)

    listen_value = merged.get("listen", DEFAULT_LISTEN)
    if not isinstance(listen_value, str):
        raise ConfigError(f"{labels['listen']}: must be a string HOST:PORT")
    host, port = parse_listen(listen_value, label=labels["listen"])
    callback_url = _url(merged.get("callback_url"), labels["callback_url"], required=False)
    if transport == "direct" and callback_url is None and _is_wildcard(host):
        raise ConfigError(
            f"{labels['listen']}: {host!r} listens on every interface, so the hub's URL "
            "for this agent cannot be derived from it; pass --callback-url URL"
        )

    services_raw = merged.get("services", [])
    if not isinstance(services_raw, list):
        raise ConfigError(f"{source}: services: must be an array of tables ([[services]])")
    services: list[ServiceConfig] = [
        _service(s, f"{source}: services[{i}]") for i, s in enumerate(services_raw)
    ]
    opt_labels = list(service_option_labels or [])
    for i, opt in enumerate(service_options):
        label = opt_labels[i] if i < len(opt_labels) else f"--service[{i}]"
        svc = _service(opt, label, ": ")
        if not any(s.type == svc.type and s.url == svc.url for s in services):
            services.append(svc)
    if not services:
        raise ConfigError(
            "no services: pass --service TYPE=URL (e.g. llm=http://127.0.0.1:11434/v1) "
            "or add a [[services]] table to the config file"
        )

    return AgentConfig(
        hub=hub,
        key=key,
        name=name,
        services=tuple(services),
        transport=transport,  # type: ignore[arg-type]
        listen_host=host,
        listen_port=port,
        callback_url=callback_url,
        discover_interval_s=_seconds(
            merged.get("discover_interval", 60.0), labels["discover_interval"]
        ),
        request_timeout_s=_seconds(merged.get("request_timeout", 600.0), labels["request_timeout"]),
        connect_timeout_s=_seconds(merged.get("connect_timeout", 10.0), labels["connect_timeout"]),
        shutdown_grace_s=_seconds(
            merged.get("shutdown_grace", 30.0), labels["shutdown_grace"], allow_zero=True
        ),
    )


_HUB_HINT = "pass --hub URL, set IC_AGENT_HUB, or put hub = \"https://...\" in the config file"
_KEY_HINT = "pass --key KEY, set IC_AGENT_KEY, or put key = \"...\" in the config file"


def _service(raw: Any, label: str, sep: str = ".") -> ServiceConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: must be a table")
    unknown = sorted(set(raw) - _SERVICE_KEYS)
    if unknown:
        raise ConfigError(
            f"{label}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_SERVICE_KEYS))})"
        )
    type_ = _choice(raw.get("type"), f"{label}{sep}type", SERVICE_TYPES)
    url = _url(raw.get("url"), f"{label}{sep}url", required=True)
    assert url is not None
    engine = _choice(raw.get("engine", "openai"), f"{label}{sep}engine", ENGINES)
    max_concurrency = raw.get("max_concurrency", 4)
    if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool):
        raise ConfigError(f"{label}{sep}max_concurrency: must be an integer")
    if max_concurrency < 1:
        raise ConfigError(f"{label}{sep}max_concurrency: must be at least 1, got {max_concurrency}")
    api_key = raw.get("api_key", "")
    if not isinstance(api_key, str):
        raise ConfigError(f"{label}{sep}api_key: must be a string")
    discover = raw.get("discover", True)
    if not isinstance(discover, bool):
        raise ConfigError(f"{label}{sep}discover: must be true or false")
    models_raw = raw.get("models", [])
    if not isinstance(models_raw, list):
        raise ConfigError(f"{label}{sep}models: must be an array of tables ([[services.models]])")
    models = tuple(_model(m, f"{label}{sep}models[{j}]") for j, m in enumerate(models_raw))
    seen: set[str] = set()
    for j, m in enumerate(models):
        if m.id in seen:
            raise ConfigError(f"{label}{sep}models[{j}].id: duplicate model id {m.id!r}")
        seen.add(m.id)
    return ServiceConfig(
        type=type_,
        url=url.rstrip("/"),
        engine=engine,
        max_concurrency=max_concurrency,
        api_key=api_key,
        discover=discover,
        models=models,
    )


def _model(raw: Any, label: str) -> ModelConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: must be a table")
    unknown = sorted(set(raw) - _MODEL_KEYS)
    if unknown:
        raise ConfigError(
            f"{label}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_MODEL_KEYS))})"
        )
    model_id = _str(raw.get("id"), f"{label}.id", required=True)
    context_length = raw.get("context_length")
    if context_length is not None and (
        not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 1
    ):
        raise ConfigError(f"{label}.context_length: must be a positive integer")
    return ModelConfig(
        id=model_id,
        context_length=context_length,
        features=_str_list(raw.get("features"), f"{label}.features"),
        input_modalities=_str_list(raw.get("input_modalities"), f"{label}.input_modalities"),
        output_modalities=_str_list(raw.get("output_modalities"), f"{label}.output_modalities"),
    )


def _str(value: Any, label: str, *, required: bool, hint: str = "") -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ConfigError(f"{label}: missing" + (f"; {hint}" if hint else ""))
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{label}: must be a string")
    return value.strip()


def _str_list(value: Any, label: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{label}: must be a list of strings")
    return tuple(value)


def _choice(value: Any, label: str, allowed: Sequence[str]) -> str:
    if value is None:
        raise ConfigError(f"{label}: missing; one of {', '.join(allowed)}")
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{label}: must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _url(value: Any, label: str, *, required: bool, hint: str = "") -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ConfigError(f"{label}: missing" + (f"; {hint}" if hint else ""))
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{label}: must be a string URL")
    text = value.strip()
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ConfigError(f"{label}: invalid URL {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{label}: must be an http:// or https:// URL, got {text!r}")
    if not parts.hostname:
        raise ConfigError(f"{label}: URL has no host: {text!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{label}: URL must not have a query or fragment: {text!r}")
    return text


def _seconds(value: Any, label: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{label}: must be a number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{label}: must be greater than 0, got {value}")
    return float(value)


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _default_name() -> str:
    return socket.gethostname() or "agent"
