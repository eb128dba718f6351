"""ACE-Step 1.5 API server (``type = "music"``): submit, poll, download.

Followed: ace-step/ACE-Step-1.5 ``docs/en/API.md`` (the ``acestep.api_server``
module): ``POST /release_task``, ``POST /query_result``, ``GET /v1/audio?path=``,
``GET /v1/models``; every answer wrapped as ``{"data", "code", "error", "timestamp",
"extra"}``; task status 0 (queued or running), 1 (succeeded), 2 (failed).

- ``/v1/music/generations``: ``prompt``, ``lyrics``, ``duration`` (→
  ``audio_duration``), ``seed`` (→ ``seed`` with ``use_random_seed = false``),
  ``bpm``, ``key`` (→ ``key_scale``), ``format`` (→ ``audio_format``: mp3, wav, flac;
  default mp3), ``model`` (the DiT model; ``/v1/models`` lists them); ``batch_size``
  is 1. The answer is the audio file with its content type.
- Progress: ``queued`` while the engine reports the task waiting (with its queue
  position), then ``generating`` with a time-based estimate from the server's
  ``avg_job_seconds`` (``/v1/stats``), ``downloading`` at the end.

Not supported: cancel (the server has no cancel call: the agent stops polling and the
engine finishes the task on its own), cover/repaint tasks, reference audio uploads.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from ..engines import DiscoveredModel, EngineListing
from .base import (
    AUDIO_TYPES,
    Adapter,
    Answer,
    EngineCall,
    EngineFailed,
    EngineRejected,
    as_float,
    as_int,
)

__all__ = ["AceStepAdapter"]

FORMATS = ("mp3", "wav", "flac")


class AceStepAdapter(Adapter):
    name = "acestep"
    service_types = ("music",)
    routes = ("/v1/music/generations",)

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        url = self.base_url + "/v1/models"
        doc, failed = await self.listing_json(client, "/v1/models", timeout=timeout)
        if failed is not None:
            return failed
        try:
            data = _unwrap(doc)
        except EngineFailed:
            return EngineListing(True, None, f"invalid answer from {url}")
        items = data.get("models") if isinstance(data, dict) else None
        if not isinstance(items, list):
            return EngineListing(True, None, f"no model list in the answer of {url}")
        names = [i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)]
        return EngineListing(True, tuple(DiscoveredModel(id=n) for n in names))

    async def run(self, call: EngineCall) -> Answer:
        data = call.json()
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise EngineRejected("'prompt' is required", param="prompt")
        fmt = data.get("format") or "mp3"
        if fmt not in FORMATS:
            raise EngineRejected(f"'format' must be one of {', '.join(FORMATS)}", param="format")
        task: dict[str, Any] = {
            "prompt": prompt,
            "lyrics": data.get("lyrics") or "",
            "audio_format": fmt,
            "batch_size": 1,
        }
        duration = as_float(data.get("duration"), "duration")
        if duration is not None:
            task["audio_duration"] = duration
        seed = as_int(data.get("seed"), "seed")
        task["use_random_seed"] = seed is None
        if seed is not None:
            task["seed"] = seed
        bpm = as_int(data.get("bpm"), "bpm")
        if bpm is not None:
            task["bpm"] = bpm
        if isinstance(data.get("key"), str):
            task["key_scale"] = data["key"]
        if call.model:
            task["model"] = call.model
        expected_s = await self._expected_seconds()
        response = await self.request("POST", "/release_task", json=task)
        submitted = _unwrap(await self.engine_json(response, "the task"))
        task_id = submitted.get("task_id") if isinstance(submitted, dict) else None
        if not isinstance(task_id, str):
            raise EngineFailed("the ACE-Step server answered /release_task without a task_id")
        call.report(0.0, "queued")
        started = time.monotonic()
        while True:
            item = await self._query(task_id)
            status = item.get("status")
            if status == 1:
                break
            if status == 2:
                raise EngineFailed(f"ACE-Step failed the task: {_result_error(item)}")
            position = item.get("queue_position")
            if isinstance(position, int) and position > 0:
                call.report(0.0, f"queued (position {position})")
            else:
                elapsed = time.monotonic() - started
                call.report(min(0.95, elapsed / expected_s), "generating")
            await asyncio.sleep(self.service.poll_interval_s)
        call.report(0.97, "downloading")
        path = _first_file(item)
        response = await self.request("GET", path)
        self.raise_for_status(response, "the audio download")
        content_type = response.headers.get("content-type", "").split(";")[0] or AUDIO_TYPES[fmt]
        if not content_type.startswith("audio/"):
            content_type = AUDIO_TYPES[fmt]
        return Answer(response.content, content_type)

    async def _expected_seconds(self) -> float:
        try:
            response = await self.request("GET", "/v1/stats", timeout=5.0)
            stats = _unwrap(response.json()) if response.status_code == 200 else {}
        except (EngineFailed, ValueError, Exception):
            stats = {}
        value = stats.get("avg_job_seconds") if isinstance(stats, dict) else None
        return float(value) if isinstance(value, int | float) and value > 0 else 30.0

    async def _query(self, task_id: str) -> dict[str, Any]:
        response = await self.request("POST", "/query_result", json={"task_id_list": [task_id]})
        items = _unwrap(await self.engine_json(response, "the task query"))
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and item.get("task_id") == task_id:
                    return item
        raise EngineFailed(f"the ACE-Step server does not know task {task_id}")


def _unwrap(doc: Any) -> Any:
    """The ``data`` of ACE-Step's response wrapper (EngineFailed on an error code)."""
    if not isinstance(doc, dict) or "data" not in doc:
        raise EngineFailed("the ACE-Step server answered without its data wrapper")
    code = doc.get("code", 200)
    if code not in (200, None) or doc.get("error"):
        raise EngineFailed(f"the ACE-Step server reported an error: {doc.get('error') or code}")
    return doc["data"]


def _results(item: dict[str, Any]) -> list[dict[str, Any]]:
    raw = item.get("result")
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
    if isinstance(raw, dict):
        raw = [raw]
    return [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []


def _result_error(item: dict[str, Any]) -> str:
    for result in _results(item):
        for key in ("error", "generation_info"):
            if isinstance(result.get(key), str) and result[key]:
                return str(result[key])[:300]
    return str(item.get("error") or "no detail")[:300]


def _first_file(item: dict[str, Any]) -> str:
    for result in _results(item):
        file = result.get("file")
        if isinstance(file, str) and file:
            parts = urlsplit(file)
            # only the server's own download route is followed, whatever host it names
            if parts.path.endswith("/v1/audio") and parse_qs(parts.query).get("path"):
                return f"/v1/audio?{parts.query}"
            raise EngineFailed(f"the ACE-Step result names an unexpected file URL: {file[:200]}")
    raise EngineFailed("the ACE-Step task succeeded without an audio file")
