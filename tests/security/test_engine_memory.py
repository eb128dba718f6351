"""Hostile engine memory: huge answers are streamed to disk, never held, and the hub stays small.

Four images engines answering 300 MB of ``b64_json`` at once once took a hub to 8 GB of
RSS. Here the hub is a real ``inference-club serve`` process; its RSS is sampled while
the answers flow and must not grow by more than 150 MB.
"""

from __future__ import annotations

import asyncio

import psutil
import pytest

from inference_club.testing.hostile_engine import Attack, serve_hostile
from inference_club.waiting import wait_event
from tests.e2e.conftest import HubProcess
from tests.security.conftest import client, register_direct

ANSWER_BYTES = 300_000_000
CONCURRENT = 4
MAX_GROWTH = 150 * 1024 * 1024

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def _sample_peak(process: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        await wait_event(stop, 0.02)


async def test_four_concurrent_300mb_image_answers_keep_the_hub_rss_bounded(hub_process: HubProcess) -> None:
    async with serve_hostile(Attack(answer="images", bytes=ANSWER_BYTES)) as (engine, url):
        await register_direct(
            hub_process.url, hub_process.key, "hostile-rig", url, {"image": ["hostile-image"]}
        )
        async with client(hub_process.url, hub_process.key, timeout=300) as http:
            warm = await http.post(
                "/v1/images/generations",
                json={"model": "hostile-image", "prompt": "warm up", "hostile": {"bytes": 64 * 1024}},
            )
            assert warm.status_code == 200, warm.text
            process = psutil.Process(hub_process.handle.pid)
            baseline = process.memory_info().rss
            peak, stop = [baseline], asyncio.Event()
            sampler = asyncio.create_task(_sample_peak(process, peak, stop))
            try:
                answers = await asyncio.gather(
                    *[
                        http.post(
                            "/v1/images/generations", json={"model": "hostile-image", "prompt": f"huge {i}"}
                        )
                        for i in range(CONCURRENT)
                    ]
                )
            finally:
                stop.set()
                await sampler
            for answer in answers:
                assert answer.status_code == 200, answer.text
            file_ids = [a.json()["data"][0]["url"].rsplit("/", 2)[-2] for a in answers]
            for file_id in file_ids:
                record = (await http.get(f"/v1/files/{file_id}")).json()
                # 300 MB of base64 (minus the JSON around it) is 225 MB of image.
                assert record["bytes"] > ANSWER_BYTES * 3 // 4 - 1024
                assert record["content_type"] == "image/png"
                assert (await http.delete(f"/v1/files/{file_id}")).status_code == 200
    assert engine.stats.bytes_sent >= CONCURRENT * (ANSWER_BYTES - 1024)
    growth = peak[0] - baseline
    print(f"hub RSS: {baseline / 2**20:.0f} MiB before, peak growth {growth / 2**20:.1f} MiB")
    assert growth < MAX_GROWTH, f"hub RSS grew by {growth / 2**20:.0f} MiB (from {baseline / 2**20:.0f} MiB)"
