"""Secrets never in logs: keys in query strings, share-link signatures, Authorization values.

The main test runs a real hub process (``inference-club serve``) with INFO logging, so
uvicorn's own access and error logs are what is checked, then reads its log output.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inference_club.redact import MASK, install_log_redaction, redact
from tests.e2e.conftest import start_hub


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (
            '127.0.0.1:5 - "GET /v1/models?api_key=ic_abcdefghijklmnopqrstuvwxyz HTTP/1.1" 401',
            "abcdefghijklm",
        ),
        ("GET /x?a=1&key=topsecretvalue&b=2", "topsecretvalue"),
        ("GET /x?token=tok-123456", "tok-123456"),
        ("GET /v1/files/f/content?expires=1&signature=deadbeefcafe", "deadbeefcafe"),
        ("GET /x?sig=abc123def", "abc123def"),
        ("Authorization: Bearer sk-live-abcdef", "sk-live-abcdef"),
        ("headers={'authorization': 'Bearer xyz-987654', 'accept': '*/*'}", "xyz-987654"),
        ("[(b'authorization', b'Basic dXNlcjpwYXNz')]", "dXNlcjpwYXNz"),
        ("x-ic-agent-secret: agent-secret-value", "agent-secret-value"),
        ("the key ic_Zm9vYmFyYmF6cXV4cXV1eA was revoked", "Zm9vYmFyYmF6cXV4"),
        ("cannot connect to postgresql+asyncpg://hub:db-pass-42@db:5432/hub", "db-pass-42"),
    ],
)
def test_redact(line: str, secret: str) -> None:
    cleaned = redact(line)
    assert secret not in cleaned and MASK in cleaned


def test_redact_leaves_ordinary_lines_alone() -> None:
    for line in (
        '127.0.0.1:5 - "GET /v1/models?limit=5&after=file_1 HTTP/1.1" 200',
        "monkey=5 primary_key=7",
        "provider 'rig' went offline",
        "calling http://127.0.0.1:9000/relay/llm/v1/chat/completions",
    ):
        assert redact(line) == line


@pytest.fixture
def captured() -> Iterator[list[str]]:
    install_log_redaction()
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("inference_club.test_log_secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)


def test_error_logs_and_tracebacks_are_redacted(captured: list[str]) -> None:
    log = logging.getLogger("inference_club.test_log_secrets")
    url = httpx.URL("http://agent:9/relay?api_key=url-secret-1")
    log.warning("calling %s with %r", url, {"authorization": "Bearer header-secret-2"})
    try:
        raise RuntimeError("upstream said: Authorization: Bearer exc-secret-3")
    except RuntimeError:
        log.exception("request to %s failed", "/v1/files/x/content?signature=exc-sig-4")
    text = "\n".join(captured)
    for secret in ("url-secret-1", "header-secret-2", "exc-secret-3", "exc-sig-4"):
        assert secret not in text, text
    assert text.count(MASK) >= 4 and "Traceback" in text


@pytest.mark.slow
def test_a_real_hub_logs_no_secrets(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, env={"IC_LOG_LEVEL": "info"})
    try:
        key = hub.key
        assert key.startswith("ic_")
        made_up = [f"qs-{secrets.token_hex(8)}" for _ in range(4)]
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=hub.url, timeout=10) as client:
            upload = client.post(
                "/v1/files", headers=headers, files={"file": ("a.txt", b"hello", "text/plain")}
            )
            file_id = upload.json()["id"]
            share = client.post(f"/v1/files/{file_id}/share", headers=headers).json()["url"]
            signature = share.rsplit("sig=", 1)[1]
            assert client.get(share).status_code == 200
            client.get(f"/v1/models?api_key={key}")
            client.get(f"/v1/models?key={made_up[0]}&limit=1")
            client.get(f"/healthz?token={made_up[1]}")
            client.get(f"/v1/files/{file_id}/content?expires=1&sig={made_up[2]}")
            client.get("/v1/models", headers={"Authorization": f"Bearer {made_up[3]}"})
            # A refused WebSocket upgrade is logged by uvicorn's error logger, URL included.
            client.get(
                f"/api/inference/agent/tunnel?api_key={key}",
                headers={
                    "connection": "upgrade",
                    "upgrade": "websocket",
                    "sec-websocket-version": "13",
                    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            )
    finally:
        hub.handle.stop(timeout=5)
    text = hub.handle.log_text()
    # The first-start banner prints the admin key once, on purpose (stdout, not a log line).
    logged = text.replace(key, "<banner>", 1)
    assert "/v1/models" in logged and "/healthz" in logged and "/content" in logged, logged
    for secret in (key, signature, *made_up):
        assert secret not in logged, f"{secret} leaked into the log:\n{logged}"
    assert MASK in logged
