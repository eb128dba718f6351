"""Every kind of endpoint through nginx: requests land on random replicas, the agents' tunnels
on whichever replica nginx picked for them."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam

from inference_club.testing.cluster import Cluster
from inference_club.testing.fake_media import wav_bytes
from tests.scaleout.conftest import http_client, sdk

pytestmark = [pytest.mark.scaleout, pytest.mark.e2e, pytest.mark.slow]

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello from behind nginx"}]


async def test_chat_plain_and_streamed(cluster: Cluster, key: str) -> None:
    client = sdk(cluster, key)
    for _ in range(6):  # several requests: they land on different replicas
        answer = await client.chat.completions.create(model="fake-chat", messages=CHAT)
        assert "hello from behind nginx" in (answer.choices[0].message.content or "")
    stream = await client.chat.completions.create(model="fake-chat", messages=CHAT, stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert "hello from behind nginx" in text


async def test_completions_and_embeddings(cluster: Cluster, key: str) -> None:
    client = sdk(cluster, key)
    completion = await client.completions.create(model="fake-chat", prompt="once upon a time")
    assert completion.choices[0].text
    embedding = await client.embeddings.create(model="fake-embed", input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding


async def test_speech_to_text_upload_and_text_to_speech(cluster: Cluster, key: str) -> None:
    client = sdk(cluster, key)
    audio = wav_bytes(2.0)
    transcript = await client.audio.transcriptions.create(
        model="fake-whisper", file=("clip.wav", io.BytesIO(audio), "audio/wav")
    )
    assert transcript.text
    speech = await client.audio.speech.create(model="fake-tts", input="hello", voice="alloy")
    assert len(speech.content) > 44  # a WAV header and samples


async def test_images_stored_in_s3_and_served_through_nginx(cluster: Cluster, key: str) -> None:
    answer = await sdk(cluster, key).images.generate(model="fake-image", prompt="a fox")
    assert answer.data
    url = answer.data[0].url or ""
    assert url.startswith(cluster.url)  # the public URL is nginx's
    file_id = url.split("/v1/files/")[1].split("/")[0]
    assert f"files/{file_id}" in cluster.s3.object_keys(cluster.bucket)
    async with httpx.AsyncClient(timeout=30) as browser:
        image = await browser.get(url)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


async def test_files_upload_and_download(cluster: Cluster, key: str) -> None:
    payload = bytes(range(256)) * 4096
    async with http_client(cluster.url, key) as http:
        uploaded = await http.post(
            "/v1/files", files={"file": ("blob.bin", payload, "application/octet-stream")}
        )
        assert uploaded.status_code == 200, uploaded.text
        for _ in range(4):
            content = await http.get(f"/v1/files/{uploaded.json()['id']}/content")
            assert content.status_code == 200 and content.content == payload


async def test_async_job_and_batch(cluster: Cluster, key: str) -> None:
    async with http_client(cluster.url, key) as http:
        submitted = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "async": True}
        )
        assert submitted.status_code == 202, submitted.text
        job = (await http.get(f"/v1/jobs/{submitted.json()['id']}", params={"wait": 30})).json()
        assert job["status"] == "PROCESSED", job

        requests = [
            {"endpoint": "/v1/embeddings", "body": {"model": "fake-embed", "input": f"item {i}"}}
            for i in range(10)
        ]
        created = await http.post("/v1/batches", json={"label": "through nginx", "requests": requests})
        assert created.status_code == 202, created.text
        batch = await batch_done(http, created.json()["id"])
        assert batch["processed"] == 10 and batch["failed"] == 0, batch


async def test_a_workflow_run(cluster: Cluster, key: str) -> None:
    spec = {
        "steps": [
            {"id": "draft", "kind": "inference", "type": "llm", "body": {"prompt": "write a title"}},
            {
                "id": "polish",
                "kind": "inference",
                "type": "llm",
                "body": {"prompt": "polish {{steps.draft.output}}"},
            },
        ]
    }
    async with http_client(cluster.url, key) as http:
        created = await http.post("/v1/workflows/runs", json={"spec": spec})
        assert created.status_code == 202, created.text
        run = (await http.get(f"/v1/workflows/runs/{created.json()['id']}", params={"wait": 30})).json()
        assert run["status"] == "DONE", run


async def batch_done(http: httpx.AsyncClient, batch_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = (await http.get(f"/v1/batches/{batch_id}")).json()
        if batch["status"] == "DONE":
            return batch
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.2)
