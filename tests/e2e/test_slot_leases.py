"""A process killed with SIGKILL while holding a shared capacity slot leaks it no longer than its lease."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from inference_club.cluster.capacity import RedisCapacity
from inference_club.cluster.redis_link import RedisLink
from tests.redis_db import TEST_DB, fresh_redis_url

pytestmark = pytest.mark.e2e

DB = TEST_DB
SLOT = ("prov_killed", 0)

HOLDER = textwrap.dedent("""
    import asyncio, sys
    from inference_club.cluster.capacity import RedisCapacity
    from inference_club.cluster.redis_link import RedisLink

    async def main() -> None:
        capacity = RedisCapacity(RedisLink(sys.argv[1]), lease_ttl_s=3.0)
        capacity.set_limit(("prov_killed", 0), 2)
        await capacity.start()
        for _ in range(2):
            assert await capacity.take([("prov_killed", 0)]) is not None
        print("held", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def test_slots_of_a_killed_holder_come_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = await fresh_redis_url(DB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, url, stdout=subprocess.PIPE, env=env
    )
    link = RedisLink(url)
    survivor = RedisCapacity(link, lease_ttl_s=3.0)
    survivor.set_limit(SLOT, 2)
    await survivor.start()
    try:
        assert holder.stdout is not None
        async with asyncio.timeout(30):
            line = await holder.stdout.readline()
        assert line.strip() == b"held"
        await asyncio.sleep(3.5)  # beyond one lease lifetime: the holder's renewals keep them
        assert await survivor.take([SLOT]) is None
        holder.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            await holder.wait()
        got = [await survivor.acquire([SLOT], timeout_s=20) for _ in range(2)]
        assert got == [SLOT, SLOT]
        for _ in got:
            survivor.release(SLOT)
    finally:
        if holder.returncode is None:
            holder.kill()
            async with asyncio.timeout(10):
                await holder.wait()
        await survivor.stop()
        await link.aclose()
