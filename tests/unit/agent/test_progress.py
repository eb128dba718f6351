"""ProgressPoster against a hub on loopback: what is posted, coalescing per request while the
hub is slow, and a hub that refuses or is gone."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from inference_club.agent.progress import PROGRESS_PATH, ProgressPoster
from inference_club.testing.servers import free_port, serve_app
from tests.polling import eventually


class ProgressHub:
    """Records progress posts; holds each until ``release`` is set when ``hold`` is on."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.hold = False
        self.status = 204

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.posts.append((scope["path"], headers.get("authorization", ""), json.loads(body)))
        self.arrived.set()
        if self.hold:
            await self.release.wait()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def bodies(self) -> list[tuple[str, float, str]]:
        return [(b["request_id"], b["progress"], b["stage"]) for _, _, b in self.posts]


@pytest.fixture
async def hub() -> AsyncIterator[tuple[ProgressHub, str, httpx.AsyncClient]]:
    app = ProgressHub()
    async with serve_app(app, lifespan="off", shutdown_timeout_s=0.5) as url:
        async with httpx.AsyncClient(trust_env=False) as client:
            yield app, url, client
        app.release.set()


async def test_a_report_is_posted_with_the_agent_key(hub: tuple[ProgressHub, str, httpx.AsyncClient]) -> None:
    app, url, client = hub
    poster = ProgressPoster(url + "/", "ic-key", client)
    assert poster.url == url + PROGRESS_PATH
    poster.report("job_1.1", 0.25, "step 5/20")
    await eventually(lambda: len(app.posts) == 1)
    assert app.posts == [
        (PROGRESS_PATH, "Bearer ic-key", {"request_id": "job_1.1", "progress": 0.25, "stage": "step 5/20"})
    ]
    await poster.aclose()


async def test_only_the_latest_report_of_a_request_waits(
    hub: tuple[ProgressHub, str, httpx.AsyncClient],
) -> None:
    app, url, client = hub
    app.hold = True
    poster = ProgressPoster(url, "k", client)
    poster.report("a", 0.1, "one")
    async with asyncio.timeout(5):  # the hub holds this post
        await app.arrived.wait()
    poster.report("a", 0.2, "two")
    poster.report("b", 0.3, "other")
    poster.report("a", 0.5, "three")
    assert repr(poster) == "<ProgressPoster pending=2>"
    app.release.set()
    await eventually(lambda: len(app.posts) == 3)
    assert app.bodies() == [("a", 0.1, "one"), ("a", 0.5, "three"), ("b", 0.3, "other")]
    await poster.aclose()


async def test_a_refusing_or_missing_hub_does_not_stop_the_sender(
    hub: tuple[ProgressHub, str, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="inference_club.agent.progress")
    app, url, client = hub
    poster = ProgressPoster(f"http://127.0.0.1:{free_port()}", "k", client)
    poster.report("a", 0.1, "lost")
    sender = poster._task
    await eventually(lambda: "could not send a progress report: ConnectError" in caplog.text)
    poster.url = url + PROGRESS_PATH
    app.status = 500
    poster.report("a", 0.2, "refused")
    await eventually(lambda: "the hub refused a progress report: HTTP 500" in caplog.text)
    app.status = 204
    poster.report("a", 0.3, "accepted")
    await eventually(lambda: len(app.posts) == 2)
    assert app.bodies() == [("a", 0.2, "refused"), ("a", 0.3, "accepted")]
    assert poster._task is sender and sender is not None and not sender.done()  # one sender throughout
    await poster.aclose()


async def test_aclose_stops_the_sender(hub: tuple[ProgressHub, str, httpx.AsyncClient]) -> None:
    app, url, client = hub
    poster = ProgressPoster(url, "k", client)
    await poster.aclose()  # nothing started yet
    app.hold = True
    poster.report("a", 0.1, "held")
    async with asyncio.timeout(5):
        await app.arrived.wait()
    task = poster._task
    assert task is not None and not task.done()
    await poster.aclose()
    assert task.cancelled()
