"""Settings: every field is an IC_ variable; production refuses unsafe defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from inference_club.settings import DEFAULT_DENIED_CIDRS, Settings, UnsafeSettings
from inference_club.surfaces.app import create_app

# A valid, non-default environment value for the fields that are not plain numbers, and
# what it must parse to. Numeric fields get default + 1 (int) or + 0.5 (float).
ENV_SAMPLES: dict[str, tuple[str, object]] = {
    "environment": ("production", "production"),
    "host": ("0.0.0.0", "0.0.0.0"),
    "port": ("9123", 9123),
    "data_dir": ("/srv/ic-data", Path("/srv/ic-data")),
    "database_url": ("postgresql://u:p@db:5432/hub", "postgresql://u:p@db:5432/hub"),
    "redis_url": ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    "internal_url": ("http://10.0.0.5:8000", "http://10.0.0.5:8000"),
    "cluster_secret": ("c" * 40, "c" * 40),
    "replica_id": ("hub-2.eu", "hub-2.eu"),
    "public_url": ("https://hub.example.org", "https://hub.example.org"),
    "secret_key": ("s" * 40, "s" * 40),
    "log_level": ("debug", "debug"),
    "log_format": ("json", "json"),
    "metrics_token": ("t" * 24, "t" * 24),
    "callback_allow_cidrs": ("10.0.0.0/8", ["10.0.0.0/8"]),
    "callback_deny_cidrs": ("192.168.0.0/16,fe80::/10", ["192.168.0.0/16", "fe80::/10"]),
    "allow_private_callbacks": ("true", True),
    "s3_endpoint": ("https://s3.eu-west-1.amazonaws.com", "https://s3.eu-west-1.amazonaws.com"),
    "s3_bucket": ("club-files", "club-files"),
    "s3_region": ("eu-west-1", "eu-west-1"),
    "s3_access_key_id": ("AKIAEXAMPLE", "AKIAEXAMPLE"),
    "s3_secret_access_key": ("x" * 40, "x" * 40),
    "s3_prefix": ("club/files/", "club/files/"),
    "s3_presigned_downloads": ("true", True),
}


def _sample(name: str) -> tuple[str, object]:
    if name in ENV_SAMPLES:
        return ENV_SAMPLES[name]
    field = Settings.model_fields[name]
    if field.annotation is int:
        return str(field.default + 1), field.default + 1
    if field.annotation is float:
        return str(field.default + 0.5), field.default + 0.5
    raise AssertionError(f"add an environment sample for Settings.{name} to ENV_SAMPLES")


FIELDS = sorted(Settings.model_fields)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("IC_"):
            monkeypatch.delenv(name)


def test_every_field_has_an_env_sample() -> None:
    for name in FIELDS:
        _sample(name)
    assert set(ENV_SAMPLES) <= set(FIELDS)


@pytest.mark.parametrize("field", FIELDS)
def test_env_var_maps_to_field(field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, expected = _sample(field)
    assert getattr(Settings(), field) != expected, "the sample must differ from the default"
    monkeypatch.setenv(f"IC_{field.upper()}", raw)
    assert getattr(Settings(), field) == expected


def test_all_env_vars_together(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = {field: _sample(field) for field in FIELDS}
    for field, (raw, _) in samples.items():
        monkeypatch.setenv(f"IC_{field.upper()}", raw)
    settings = Settings()
    settings.check_safe()
    assert {f: getattr(settings, f) for f in FIELDS} == {f: v for f, (_, v) in samples.items()}


def test_explicit_values_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IC_PORT", "9000")
    assert Settings(port=9001).port == 9001


def test_defaults_are_development_and_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.environment == "development"
    assert settings.data_dir == tmp_path
    assert settings.is_sqlite
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{(tmp_path / 'hub.db').resolve()}"
    settings.check_safe()  # development accepts the derived secret
    assert settings.effective_secret_key()
    assert Settings().data_dir == Path("./data")


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_urls_resolve_to_async_drivers(url: str, resolved: str) -> None:
    settings = Settings(database_url=url)
    assert settings.resolved_database_url == resolved
    assert settings.is_sqlite == resolved.startswith("sqlite")


@pytest.mark.parametrize("secret", [None, "", "short", "x" * 31])
def test_production_refuses_missing_or_short_secret(secret: str | None) -> None:
    settings = Settings(environment="production", secret_key=secret)
    with pytest.raises(UnsafeSettings, match="IC_SECRET_KEY"):
        settings.check_safe()


def test_production_accepts_a_long_secret() -> None:
    Settings(environment="production", secret_key="x" * 32).check_safe()


@pytest.mark.parametrize("cluster_secret", [None, "", "x" * 31])
def test_production_with_redis_refuses_missing_or_short_cluster_secret(cluster_secret: str | None) -> None:
    settings = Settings(
        environment="production",
        secret_key="x" * 32,
        redis_url="redis://127.0.0.1:6379/0",
        cluster_secret=cluster_secret,
    )
    with pytest.raises(UnsafeSettings, match="IC_CLUSTER_SECRET"):
        settings.check_safe()


def test_cluster_secret_is_needed_only_with_redis_in_production() -> None:
    Settings(environment="production", secret_key="x" * 32).check_safe()
    Settings(redis_url="redis://127.0.0.1:6379/0").check_safe()  # development
    Settings(
        environment="production",
        secret_key="x" * 32,
        redis_url="redis://127.0.0.1:6379/0",
        cluster_secret="c" * 32,
    ).check_safe()


@pytest.mark.parametrize(
    ("host", "port", "internal_url", "expected"),
    [
        ("10.0.0.5", 8000, None, "http://10.0.0.5:8000"),
        ("::1", 8001, None, "http://[::1]:8001"),
        ("127.0.0.1", 8000, "http://hub-1.internal:9000/", "http://hub-1.internal:9000"),
    ],
)
def test_effective_internal_url(host: str, port: int, internal_url: str | None, expected: str) -> None:
    settings = Settings(host=host, port=port, internal_url=internal_url)
    assert settings.effective_internal_url() == expected


def test_internal_url_on_every_interface_names_the_machine() -> None:
    import socket

    assert (
        Settings(host="0.0.0.0", port=8000).effective_internal_url() == f"http://{socket.gethostname()}:8000"
    )


def test_production_refused_by_env_and_by_the_app_factory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IC_ENVIRONMENT", "production")
    monkeypatch.setenv("IC_SECRET_KEY", "too-short")
    with pytest.raises(UnsafeSettings):
        Settings(data_dir=tmp_path).check_safe()
    with pytest.raises(UnsafeSettings):
        create_app(Settings(data_dir=tmp_path))


def test_cidr_defaults_deny_link_local_and_metadata() -> None:
    settings = Settings()
    assert settings.callback_deny_cidrs == DEFAULT_DENIED_CIDRS
    assert "169.254.0.0/16" in settings.callback_deny_cidrs
    assert settings.callback_allow_cidrs == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10.0.0.0/8", ["10.0.0.0/8"]),
        (" 10.0.0.0/8 , 192.168.1.0/24 ,", ["10.0.0.0/8", "192.168.1.0/24"]),
        ('["10.0.0.0/8", "fd00::/8"]', ["10.0.0.0/8", "fd00::/8"]),
        ("", []),
        ("10.1.2.3", ["10.1.2.3"]),
    ],
)
def test_cidr_lists_from_env(raw: str, expected: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IC_CALLBACK_ALLOW_CIDRS", raw)
    assert Settings().callback_allow_cidrs == expected


def test_cidr_lists_from_python() -> None:
    assert Settings(callback_deny_cidrs="1.2.3.0/24").callback_deny_cidrs == ["1.2.3.0/24"]
    assert Settings(callback_deny_cidrs=["1.2.3.0/24"]).callback_deny_cidrs == ["1.2.3.0/24"]


@pytest.mark.parametrize("raw", ["not-a-network", "10.0.0.0/33", "10.0.0.0/8,bogus", '["10.0.0.0/8",', "[1]"])
def test_invalid_cidrs_are_refused_naming_the_field(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IC_CALLBACK_DENY_CIDRS", raw)
    with pytest.raises(ValidationError, match="callback_deny_cidrs"):
        Settings()


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("port", "70000"),
        ("port", "abc"),
        ("environment", "staging"),
        ("online_window_s", "0"),
        ("max_body_bytes", "-1"),
        ("breaker_failures", "0"),
        ("replica_id", "hub a"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(
    field: str, raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"IC_{field.upper()}", raw)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_every_field_is_described() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"


def test_private_callbacks_follow_the_environment_unless_set() -> None:
    assert Settings(environment="development").private_callbacks_allowed is True
    production = {"environment": "production", "secret_key": "s" * 40}
    assert Settings(**production).private_callbacks_allowed is False  # type: ignore[arg-type]
    assert Settings(**production, allow_private_callbacks=True).private_callbacks_allowed is True  # type: ignore[arg-type]
    assert Settings(allow_private_callbacks=False).private_callbacks_allowed is False


def test_an_unknown_log_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IC_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


def test_the_metrics_token_is_not_in_the_settings_repr() -> None:
    assert "t" * 24 not in repr(Settings(metrics_token="t" * 24))
