"""Time the dashboard's pages on a full account: 10,000 jobs, 1,000 files, 20,000 requests.

Builds a hub (SQLite in a temp dir, or ``--database-url``) in this process, writes the
rows straight into the database, signs in with a password like a browser, and fetches
each page ``--rounds`` times, printing the median and the slowest time per page. Pages
are paginated (50 rows), so their time should not grow with the account.

Usage::

    .venv/bin/python bench/dashboard_bench.py [--rounds 20] [--jobs 10000] [--files 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert

from inference_club.domain.clock import utcnow
from inference_club.domain.ids import new_id
from inference_club.settings import Settings
from inference_club.store.tables import Job, StoredFile, UsageRecord
from inference_club.surfaces.app import create_app
from inference_club.testing.servers import serve_app

PASSWORD = "bench password"
PAGES = [
    "/",
    "/dashboard/jobs",
    "/dashboard/jobs?status=FAILED",
    "/dashboard/batches",
    "/dashboard/files",
    "/dashboard/files?kind=image",
    "/dashboard/models",
    "/dashboard/machines",
    "/dashboard/settings/token",
    "/dashboard/workflows",
    "/dashboard/playground",
]


async def _seed(app: object, user_id: str, jobs: int, files: int, requests: int) -> str:
    hub = app.state.hub  # type: ignore[attr-defined]
    now = utcnow()
    job_rows: list[dict[str, object]] = []
    file_rows: list[dict[str, object]] = []
    usage_rows: list[dict[str, object]] = []
    for i in range(jobs):
        at = now - timedelta(seconds=jobs - i)
        job_rows.append(
            {
                "id": new_id("job"),
                "user_id": user_id,
                "key_id": None,
                "batch_id": None,
                "endpoint": "chat.completions",
                "model": "m",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]},
                "status": ("PROCESSED", "FAILED", "CANCELED")[i % 3],
                "attempts": 1,
                "max_attempts": 3,
                "revision": 2,
                "request_id": "bench",
                "base_url": "http://x",
                "provider_id": None,
                "provider_name": None,
                "result": {"choices": [{"message": {"content": "a"}}]},
                "result_url": None,
                "files": [],
                "error": None,
                "lease_owner": None,
                "lease_expires_at": None,
                "created_at": at,
                "queued_at": at,
                "run_after": at,
                "started_at": at,
                "finished_at": at,
            }
        )
    for i in range(files):
        file_rows.append(
            {
                "id": new_id("file"),
                "user_id": user_id,
                "filename": f"f{i}.png",
                "content_type": "image/png" if i % 2 else "audio/wav",
                "bytes": 1000,
                "purpose": "output",
                "storage_key": f"missing-{i}",
                "created_at": now,
            }
        )
    for i in range(requests):
        usage_rows.append(
            {
                "request_id": "bench",
                "user_id": user_id,
                "key_id": None,
                "provider_id": None,
                "endpoint": "chat.completions",
                "model": f"m{i % 3}",
                "status_code": 200 if i % 10 else 502,
                "error_type": None,
                "latency_ms": float(i % 500),
                "ttft_ms": None,
                "prompt_tokens": 5,
                "completion_tokens": 7,
                "total_tokens": 12,
                "created_at": now - timedelta(seconds=(i * 86_000) // max(requests, 1)),
            }
        )
    async with hub.database.transaction() as session:
        for table, rows in ((Job, job_rows), (StoredFile, file_rows), (UsageRecord, usage_rows)):
            for start in range(0, len(rows), 1000):
                await session.execute(insert(table), rows[start : start + 1000])
    return user_id


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=args.database_url, log_level="warning")
        app = create_app(settings)
        async with serve_app(app) as url:
            user = await app.state.hub.accounts.create_user("bench", password=PASSWORD)
            await _seed(app, user.id, args.jobs, args.files, args.requests)
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                form = await client.get("/dashboard/login")
                token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
                signed = await client.post(
                    "/dashboard/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token}
                )
                assert signed.status_code == 303, signed.text
                print(
                    f"{args.jobs} jobs, {args.files} files, {args.requests} usage rows; "
                    f"{args.rounds} rounds per page ({'PostgreSQL' if args.database_url else 'SQLite'})"
                )
                print(f"{'page':<34} {'median ms':>10} {'max ms':>8}")
                for path in PAGES:
                    times = []
                    for _ in range(args.rounds):
                        started = time.perf_counter()
                        response = await client.get(path)
                        times.append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 200, (path, response.status_code)
                    print(f"{path:<34} {statistics.median(times):>10.1f} {max(times):>8.1f}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
