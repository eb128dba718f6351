"""Schema-driven fuzzing: the OpenAPI document describes what the hub validates.

schemathesis reads ``/openapi.json`` of a hub on a loopback socket and runs its examples,
fuzzing and stateful phases with a fixed seed and a bounded number of cases. Every check
must pass: no 5xx, every status and body as documented, schema-valid requests accepted,
invalid ones refused. The hub must still answer afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings, running_hub

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]

SEED = 20261127
MAX_EXAMPLES = 12  # per operation and phase: the whole run stays well under 3 minutes
CONFIG = Path(__file__).with_name("schemathesis.toml")


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed (it is in the test extra: make test installs it)")
    return found


async def test_fuzzing_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", rate_limit_rpm=0)
    async with running_hub(settings) as hub:
        key = await hub.new_user("fuzzer")
        process = await asyncio.create_subprocess_exec(
            _schemathesis(),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{hub.base_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--phases",
            "examples,fuzzing,stateful",
            "--seed",
            str(SEED),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
            "--generation-deterministic",
            "--request-timeout",
            "20",
            # The API explorer's HTML and the job event stream are not JSON operations to fuzz.
            "--exclude-path-regex",
            "^/(docs|v1/jobs/\\{job_id\\}/events)",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        async with asyncio.timeout(170):
            output, _ = await process.communicate()
        report = output.decode("utf-8", "replace")
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as client:
            assert (await client.get("/healthz")).status_code == 200, "the hub did not survive the fuzzing"
    assert process.returncode == 0, report[-20000:]
    assert "Tested: " in report
