from __future__ import annotations

from pathlib import Path

import pytest

from inference_club.agent.config import (
    ConfigError,
    ModelConfig,
    build_config,
    load_config,
    parse_listen,
    parse_service_option,
)

DOCUMENTED_EXAMPLE = """
hub = "https://hub.example.org"
key = "ic-abc"
name = "home-rig"

[[services]]
type = "llm"
url = "http://127.0.0.1:11434/v1"
engine = "ollama"
max_concurrency = 2
api_key = "local-secret"
discover = false

  [[services.models]]
  id = "qwen3-8b"
  features = ["tools", "streaming"]
  context_length = 32768
  input_modalities = ["text"]
  output_modalities = ["text"]

[[services]]
type = "tts"
url = "http://127.0.0.1:8880/v1/"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_the_documented_example_parses(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DOCUMENTED_EXAMPLE))
    assert config.hub == "https://hub.example.org"
    assert config.key == "ic-abc"
    assert config.name == "home-rig"
    assert config.heartbeat_url == "https://hub.example.org/api/inference/agent/heartbeat/"
    llm, tts = config.services
    assert (llm.type, llm.engine, llm.max_concurrency, llm.discover) == ("llm", "ollama", 2, False)
    assert llm.api_key == "local-secret"
    assert "local-secret" not in repr(llm) and "ic-abc" not in repr(config)
    assert llm.models == (
        ModelConfig(
            id="qwen3-8b",
            context_length=32768,
            features=("tools", "streaming"),
            input_modalities=("text",),
            output_modalities=("text",),
        ),
    )
    assert (tts.type, tts.url, tts.engine, tts.max_concurrency, tts.discover) == (
        "tts",
        "http://127.0.0.1:8880/v1",
        "openai",
        4,
        True,
    )
    assert config.transport == "tunnel"  # the default; the CLI insists on --direct for now
    assert config.discover_interval_s == 60.0


def test_service_option_equals_entry_with_defaults() -> None:
    config = load_config(
        overrides={"hub": "http://hub:8000", "key": "k", "transport": "direct"},
        services=["embedding=http://127.0.0.1:8081/v1"],
    )
    (svc,) = config.services
    assert (svc.type, svc.url, svc.engine, svc.max_concurrency, svc.discover, svc.models) == (
        "embedding",
        "http://127.0.0.1:8081/v1",
        "openai",
        4,
        True,
        (),
    )
    assert config.name  # defaults to the host name
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9000)


def test_cli_values_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, DOCUMENTED_EXAMPLE)
    config = load_config(
        path,
        overrides={
            "hub": "http://other:1",
            "name": "cli-name",
            "key": None,  # not given on the command line: the file's stays
            "discover_interval": 5.0,
            "listen": "[::1]:0",
        },
        services=["image=http://127.0.0.1:7860/v1", "tts=http://127.0.0.1:8880/v1"],
    )
    assert (config.hub, config.name, config.key) == ("http://other:1", "cli-name", "ic-abc")
    assert config.discover_interval_s == 5.0
    assert (config.listen_host, config.listen_port) == ("::1", 0)
    # the file's tts entry wins over the identical --service; the image one is added
    assert [s.type for s in config.services] == ["llm", "tts", "image"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("hub = [", "invalid TOML"),
        ('hub = "ftp://x"\nkey="k"\n[[services]]\ntype="llm"\nurl="http://a/v1"', "hub: must be"),
        ('key = "k"\n[[services]]\ntype="llm"\nurl="http://a/v1"', "hub: missing"),
        ('hub = "http://h"\n[[services]]\ntype="llm"\nurl="http://a/v1"', "key: missing"),
        ('hub = "http://h"\nkey = "k"', "no services"),
        ('hub = "http://h"\nkey = "k"\nhubb = 1', "unknown key 'hubb'"),
        (
            'hub = "http://h"\nkey = "k"\n[[services]]\ntype="chat"\nurl="http://a/v1"',
            "services[0].type: must be one of llm, embedding",
        ),
        (
            'hub = "http://h"\nkey = "k"\n[[services]]\ntype="llm"\nurl="unix:///x"',
            "services[0].url: must be an http:// or https:// URL",
        ),
        (
            'hub = "http://h"\nkey = "k"\n[[services]]\ntype="llm"',
            "services[0].url: missing",
        ),
        (
            'hub = "http://h"\nkey = "k"\n[[services]]\ntype="llm"\nurl="http://a"\nmax_concurrency = 0',
            "services[0].max_concurrency: must be at least 1",
        ),
        (
            'hub = "http://h"\nkey = "k"\n[[services]]\ntype="llm"\nurl="http://a"\nengine = 5',
            "services[0].engine: must be a string",
        ),
        (
            'hub = "http://h"\nkey = "k"\n[[services]]\ntype="llm"\nurl="http://a"\ndiscover = "yes"',
            "services[0].discover: must be true or false",
        ),
        (
            'hub = "http://h"\nkey = "k"\n[[services]]\ntype="llm"\nurl="http://a"\n'
            '[[services.models]]\nid = "m"\ncontext_length = -1',
            "services[0].models[0].context_length: must be a positive integer",
        ),
        (
            'hub = "http://h"\nkey = "k"\n[[services]]\ntype="llm"\nurl="http://a"\n'
            '[[services.models]]\nfeatures = ["tools"]',
            "services[0].models[0].id: missing",
        ),
        (
            'hub = "http://h"\nkey = "k"\ndiscover_interval = 0\n[[services]]\ntype="llm"\nurl="http://a"',
            "discover_interval: must be greater than 0",
        ),
        (
            'hub = "http://h"\nkey = "k"\ntransport = "direct"\nlisten = "0.0.0.0:9000"\n'
            '[[services]]\ntype="llm"\nurl="http://a"',
            "--callback-url",
        ),
    ],
)
def test_bad_files_name_the_field(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert fragment in str(info.value)
    if fragment != "no services":
        assert str(tmp_path / "agent.toml") in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/agent.toml")


@pytest.mark.parametrize("value", ["llm", "llm=", "=http://x", "http://x"])
def test_bad_service_option_syntax(value: str) -> None:
    with pytest.raises(ConfigError, match="expected TYPE=URL"):
        parse_service_option(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("chat=http://127.0.0.1:1/v1", ": type: must be one of"),
        ("llm=127.0.0.1:11434", ": url: must be an http:// or https:// URL"),
        ("llm=http://host:99999/v1", ": url: invalid URL"),
    ],
)
def test_bad_service_option_values_name_the_option(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"hub": "http://h", "key": "k"}, services=[value])
    message = str(info.value)
    assert message.startswith(f"--service {value!r}")
    assert fragment in message


def test_override_labels_name_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--hub: must be an http"):
        load_config(overrides={"hub": "hub.example.org", "key": "k"}, services=["llm=http://a"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8080", ("::1", 8080)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["9000", ":9000", "host:", "host:x", "host:70000", "::1:9000"])
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        parse_listen(value)


def test_duplicate_model_ids_rejected() -> None:
    with pytest.raises(ConfigError, match=r"services\[0\]\.models\[1\]\.id: duplicate"):
        build_config(
            {
                "hub": "http://h",
                "key": "k",
                "services": [{"type": "llm", "url": "http://a", "models": [{"id": "x"}, {"id": "x"}]}],
            }
        )


def test_metrics_endpoint_is_off_by_default() -> None:
    config = load_config(overrides={"hub": "http://hub", "key": "k"}, services=["llm=http://a"])
    assert config.metrics_listen is None and config.metrics_token == ""


def test_metrics_endpoint_from_the_file_and_the_options(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'metrics_listen = "127.0.0.1:9100"\nmetrics_token = "from-file"\n' + DOCUMENTED_EXAMPLE
    )
    assert load_config(path).metrics_listen == ("127.0.0.1", 9100)
    config = load_config(path, overrides={"metrics_listen": "[::1]:0", "metrics_token": "from-flag"})
    assert config.metrics_listen == ("::1", 0) and config.metrics_token == "from-flag"
    assert "from-flag" not in repr(config)


def test_metrics_endpoint_needs_a_token() -> None:
    with pytest.raises(ConfigError, match=r"^--metrics-listen: the metrics endpoint needs a token"):
        load_config(
            overrides={"hub": "http://hub", "key": "k", "metrics_listen": "127.0.0.1:9100"},
            services=["llm=http://a"],
        )


def test_metrics_listen_must_be_host_and_port() -> None:
    with pytest.raises(ConfigError, match=r"^--metrics-listen: expected HOST:PORT"):
        load_config(
            overrides={"hub": "http://hub", "key": "k", "metrics_listen": "9100", "metrics_token": "t"},
            services=["llm=http://a"],
        )


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (
            {"type": "llm", "url": "http://a", "max_concurrency": "2"},
            "services[0].max_concurrency: must be an integer",
        ),
        (
            {"type": "llm", "url": "http://a", "timeout": True},
            "services[0].timeout: must be a number of seconds",
        ),
        ({"type": "llm", "url": 5}, "services[0].url: must be a string URL"),
        (
            {"type": "llm", "url": "http://a", "models": [{"id": "m", "features": ["tools", 1]}]},
            "services[0].models[0].features[1]: must be a non-empty string",
        ),
        (
            {"type": "llm", "url": "http://a", "models": [{"id": "m", "size": 1}]},
            "services[0].models[0]: unknown key 'size'",
        ),
        (5, "services[0]: must be a table"),
    ],
)
def test_types_are_strict_and_nested_fields_are_named(service: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"hub": "http://h", "key": "k", "services": [service]}, source="agent.toml")
    assert str(info.value).startswith(f"agent.toml: {message}")


def test_blank_values_count_as_not_given() -> None:
    config = build_config(
        {
            "hub": " http://h ",
            "key": " k ",
            "name": " ",
            "services": [{"type": "llm", "url": "http://a/", "engine": "", "workflows": " /w "}],
        }
    )
    (svc,) = config.services
    assert (config.hub, config.key, svc.url, svc.engine, svc.workflows) == (
        "http://h",
        "k",
        "http://a",
        "openai",
        "/w",
    )
    assert config.name  # the host name
    with pytest.raises(ConfigError, match=r"^config: key: missing; pass --key"):
        build_config({"hub": "http://h", "key": "  ", "services": [{"type": "llm", "url": "http://a"}]})
