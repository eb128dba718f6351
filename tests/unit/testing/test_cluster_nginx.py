"""The nginx configuration of the scale-out cluster (and of docs/deployment.md) is one nginx accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from inference_club.testing.cluster import TUNNEL_PATH, ClusterUnavailable, find_binary, nginx_config
from tests.conftest import skip_or_fail


def nginx() -> str:
    try:
        return find_binary("nginx")
    except ClusterUnavailable as exc:
        skip_or_fail(str(exc))
        raise


def test_the_generated_config_passes_nginx_t(tmp_path: Path) -> None:
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / kind).mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        nginx_config(
            listen="127.0.0.1:18080", replicas=["127.0.0.1:18001", "127.0.0.1:18002"], prefix=tmp_path
        )
    )
    checked = subprocess.run(
        [nginx(), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "e.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


def test_the_config_streams_and_upgrades_tunnels() -> None:
    text = nginx_config(listen="8080", replicas=["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"])
    assert text.count("server 10.0.0.") == 3 and "random;" in text
    assert "proxy_buffering off;" in text and "proxy_request_buffering off;" in text
    tunnel = text[text.index(f"location {TUNNEL_PATH}") :]
    assert "proxy_set_header Upgrade $http_upgrade;" in tunnel and 'Connection "upgrade"' in tunnel
    assert "daemon off" not in text  # the production shape has no test-only process settings


def test_the_deployment_doc_shows_the_generated_locations() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "deployment.md").read_text()
    generated = nginx_config(listen="8080", replicas=["10.0.0.11:8000"])
    for block in ("location / {", f"location {TUNNEL_PATH} {{"):
        start = generated.index(block)
        end = generated.index("}", start)
        assert generated[start:end] in doc, block
