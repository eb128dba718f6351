"""Every /v1 endpoint through hub → agent (direct) → fake engine, with the official SDK."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.conftest import Stack

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello hub"}]


async def test_models_lists_capabilities(stack: Stack) -> None:
    models = {m.id: m for m in (await stack.client().models.list()).data}
    assert {
        "fake-chat",
        "fake-embed",
        "fake-whisper",
        "fake-tts",
        "fake-voice",
        "fake-image",
        "fake-music",
        "fake-video",
        "fake-mesh",
    } <= set(models)
    chat = models["fake-chat"].model_dump()
    assert chat["owned_by"] == "home-rig"
    assert chat["service_type"] == "llm"
    assert chat["supported_features"] == ["streaming", "tools"]
    assert chat["input_modalities"] == ["text"]
    assert models["fake-voice"].model_dump()["supported_features"] == ["voice-cloning"]


async def test_chat_completion(stack: Stack) -> None:
    answer = await stack.client().chat.completions.create(model="fake-chat", messages=CHAT)
    assert "hello hub" in (answer.choices[0].message.content or "")
    assert answer.usage is not None and answer.usage.total_tokens > 0


async def test_chat_completion_sync_client(stack: Stack) -> None:
    # The sync client blocks, so it runs in a thread while the hub serves on this loop.
    answer = await asyncio.to_thread(
        stack.sync_client().chat.completions.create, model="fake-chat", messages=CHAT
    )
    assert "hello hub" in (answer.choices[0].message.content or "")


async def test_chat_stream_arrives_before_generation_ends(stack: Stack) -> None:
    started = time.monotonic()
    stream = await stack.client().chat.completions.create(
        model="fake-chat",
        messages=CHAT,
        stream=True,
        extra_body={"fake_chunks": 10, "fake_chunk_delay": 0.2},
    )
    first_at = None
    text = ""
    async for chunk in stream:
        if first_at is None:
            first_at = time.monotonic() - started
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    total = time.monotonic() - started
    assert first_at is not None and first_at < total / 2, (first_at, total)
    assert "hello" in text


async def test_completions_stream_and_not(stack: Stack) -> None:
    client = stack.client()
    answer = await client.completions.create(model="fake-chat", prompt="say something")
    assert "say something" in answer.choices[0].text
    parts = [
        c.choices[0].text
        async for c in await client.completions.create(
            model="fake-chat", prompt="streamed prompt", stream=True
        )
        if c.choices
    ]
    assert "streamed" in "".join(parts)


async def test_embeddings(stack: Stack) -> None:
    answer = await stack.client().embeddings.create(model="fake-embed", input=["a", "b"])
    assert len(answer.data) == 2 and len(answer.data[0].embedding) > 0


async def test_transcription_multipart(stack: Stack) -> None:
    audio = b"RIFF" + bytes(range(256)) * 40
    answer = await stack.client().audio.transcriptions.create(
        model="fake-whisper", file=("clip.wav", io.BytesIO(audio), "audio/wav")
    )
    assert "clip.wav" in answer.text and str(len(audio)) in answer.text
    text = await stack.client().audio.transcriptions.create(
        model="fake-whisper", file=("clip.wav", io.BytesIO(audio), "audio/wav"), response_format="srt"
    )
    assert "-->" in str(text)


async def test_speech_bytes_are_stored_as_file(stack: Stack) -> None:
    async with stack.client().audio.speech.with_streaming_response.create(
        model="fake-tts", voice="alloy", input="hello there"
    ) as response:
        audio = await response.read()
        file_id = response.headers["x-file-id"]
        file_url = response.headers["x-file-url"]
    assert audio[:4] == b"RIFF"
    async with stack.http() as http:
        stored = await http.get(file_url)
        assert stored.status_code == 200 and stored.content == audio
        meta = (await http.get(f"/v1/files/{file_id}")).json()
        assert meta["bytes"] == len(audio) and meta["content_type"].startswith("audio/")


async def test_voices(stack: Stack) -> None:
    async with stack.http() as http:
        answer = await http.get("/v1/audio/voices", params={"model": "fake-tts"})
        assert answer.status_code == 200 and "alloy" in answer.json()["voices"]
        missing = await http.get("/v1/audio/voices")
        assert missing.status_code == 400


async def test_image_generation_url_and_b64(stack: Stack) -> None:
    client = stack.client()
    answer = await client.images.generate(model="fake-image", prompt="a red fox", n=2)
    assert answer.data and len(answer.data) == 2 and answer.data[0].url
    async with stack.http() as http:
        png = await http.get(answer.data[0].url)
    assert png.content.startswith(b"\x89PNG")
    b64 = await client.images.generate(model="fake-image", prompt="a red fox", response_format="b64_json")
    assert b64.data
    assert base64.b64decode(b64.data[0].b64_json or "").startswith(b"\x89PNG")


async def test_image_edit_multipart_with_several_images(stack: Stack) -> None:
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    answer = await stack.client().images.edit(
        model="fake-image",
        prompt="make it blue",
        image=[("a.png", io.BytesIO(png), "image/png"), ("b.png", io.BytesIO(png), "image/png")],
    )
    assert answer.data and answer.data[0].url
    assert stack.engine.stats.last_request is not None


async def test_music_and_video(stack: Stack) -> None:
    async with stack.http() as http:
        music = await http.post(
            "/v1/music/generations", json={"model": "fake-music", "prompt": "lofi", "duration": 1}
        )
        assert music.status_code == 200 and music.content[:4] == b"RIFF" and music.headers["x-file-id"]
        video = await http.post("/v1/videos/generations", json={"model": "fake-video", "prompt": "waves"})
        assert video.status_code == 200 and video.headers["content-type"].startswith("video/mp4")
        assert video.content[4:8] == b"ftyp"


async def test_voice_cloning_multipart(stack: Stack) -> None:
    async with stack.http() as http:
        answer = await http.post(
            "/v1/voice/generations",
            data={"model": "fake-voice", "input": "[S1] hi [S2] hello", "transcript_S1": "hi"},
            files={"speaker_S1": ("s1.wav", b"RIFF" + b"\0" * 100, "audio/wav")},
        )
        assert answer.status_code == 200, answer.text
        assert answer.content[:4] == b"RIFF"
        # fake-tts lacks the voice-cloning feature, so it is not a candidate
        refused = await http.post("/v1/voice/generations", data={"model": "fake-tts", "input": "[S1] hi"})
        assert refused.status_code == 404 and refused.json()["error"]["type"] == "no_provider"


async def test_mesh_json_and_multipart(stack: Stack) -> None:
    async with stack.http() as http:
        answer = await http.post("/v1/3d/generations", json={"model": "fake-mesh", "prompt": "a chair"})
        assert answer.status_code == 200, answer.text
        item = answer.json()["data"][0]
        assert item["type"] == "model/gltf-binary"
        glb = await http.get(item["url"])
        assert glb.content[:4] == b"glTF"
        upload = await http.post(
            "/v1/3d/generations",
            data={"model": "fake-mesh"},
            files={"image": ("chair.png", b"\x89PNG....", "image/png")},
        )
        assert upload.status_code == 200, upload.text


async def test_errors_are_typed(stack: Stack) -> None:
    client = stack.client()
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.chat.completions.create(model="nope", messages=CHAT)
    assert unknown.value.body["type"] == "no_provider"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):  # right model, wrong service type
        await client.embeddings.create(model="fake-chat", input="x")
    with pytest.raises(openai.BadRequestError) as missing:
        await client.chat.completions.create(model="fake-chat", messages=[])
    assert missing.value.body["param"] == "messages"  # type: ignore[index]
    async with stack.http() as http:
        upstream = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "fake_fault": "status=500"}
        )
        assert upstream.status_code == 502 and upstream.json()["error"]["type"] == "upstream_error"
        engine_400 = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "fake_fault": "status=400"}
        )
        assert engine_400.status_code == 400 and "error" in engine_400.json()
        wrong_type = await http.post("/v1/chat/completions", json={"model": 3, "messages": CHAT})
        assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "model"
        not_json = await http.post(
            "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400 and "detail" in not_json.json()
        multipart_to_json = await http.post("/v1/chat/completions", files={"f": ("a", b"x")})
        assert multipart_to_json.status_code == 415
        json_to_multipart = await http.post("/v1/audio/transcriptions", json={"model": "fake-whisper"})
        assert json_to_multipart.status_code == 415
        no_file = await http.post("/v1/audio/transcriptions", data={"model": "fake-whisper"})
        assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
        unicode = await http.post(
            "/v1/chat/completions",
            json={"model": "fake-chat", "messages": [{"role": "user", "content": "héllo 🌍 \u2028 ok"}]},
        )
        assert unicode.status_code == 200 and "🌍" in unicode.json()["choices"][0]["message"]["content"]
        queued = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "async": 1}
        )
        assert queued.status_code == 400 and queued.json()["error"]["param"] == "async"


async def test_unknown_fields_pass_through_and_async_is_stripped(stack: Stack) -> None:
    async with stack.http() as http:
        answer = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "my_extension": {"x": 1}}
        )
        assert answer.status_code == 200
    last = stack.engine.stats.last_request
    assert last is not None


async def test_another_users_private_provider_is_invisible(stack: Stack) -> None:
    bob = await stack.hub.new_user("bob")
    assert (await stack.client(bob).models.list()).data == []
    with pytest.raises(openai.NotFoundError):
        await stack.client(bob).chat.completions.create(model="fake-chat", messages=CHAT)


async def test_shared_provider_serves_others(stack: Stack) -> None:
    provider = stack.hub.hub.registry.all()[0]
    await stack.hub.hub.registry.set_visibility(provider.id, "shared")
    bob = await stack.hub.new_user("bob")
    carol = await stack.hub.new_user("carol", routing="own")
    answer = await stack.client(bob).chat.completions.create(model="fake-chat", messages=CHAT)
    assert answer.choices
    with pytest.raises(openai.NotFoundError):
        await stack.client(carol).chat.completions.create(model="fake-chat", messages=CHAT)


async def test_usage_is_recorded_off_the_request_path(stack: Stack) -> None:
    await stack.client().chat.completions.create(model="fake-chat", messages=CHAT)
    recorder = stack.hub.hub.usage
    from inference_club.store import usage as usage_q

    # The row is recorded when the relay ends, which may be just after the client has read
    # the last byte: flush until it is there.
    user_id = await _user_id(stack)
    for _ in range(50):
        assert await recorder.flush() >= 0
        async with stack.hub.hub.database.read() as session:
            rows = await usage_q.recent_usage(session, user_id=user_id)
        if rows:
            break
        await asyncio.sleep(0.1)
    assert rows and rows[0].endpoint == "chat.completions" and rows[0].total_tokens


async def test_a_plain_answer_goes_whole_with_its_length_and_a_long_one_streams(stack: Stack) -> None:
    async with stack.http() as http:
        short = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        long_text = "ünïcode words " * 8_000  # well past the 64 KiB read ahead
        long = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "fake_reply": long_text}
        )
    assert short.status_code == 200 and "hello hub" in short.json()["choices"][0]["message"]["content"]
    assert short.headers["content-length"] == str(len(short.content))
    assert "transfer-encoding" not in short.headers
    assert long.status_code == 200 and long.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in long.headers
    assert long.json()["choices"][0]["message"]["content"] == long_text


async def test_a_plain_answer_breaking_off_is_a_clean_error_not_a_short_body(stack: Stack) -> None:
    async with stack.http() as http:
        broken = await http.post(
            "/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT, "fake_fault": "break=0"}
        )
        assert broken.status_code == 502, broken.text
        assert broken.json()["error"]["type"] == "upstream_error"
        assert "broke off" in broken.json()["error"]["message"]
        assert broken.headers["x-request-id"]
        after = await http.post("/v1/chat/completions", json={"model": "fake-chat", "messages": CHAT})
        assert after.status_code == 200  # the slot went back and the provider still serves
    from inference_club.store import usage as usage_q

    user_id = await _user_id(stack)
    for _ in range(50):
        await stack.hub.hub.usage.flush()
        async with stack.hub.hub.database.read() as session:
            rows = await usage_q.recent_usage(session, user_id=user_id)
        if len(rows) == 2:
            break
        await asyncio.sleep(0.1)
    statuses = sorted((row.status_code, row.error_type) for row in rows)
    assert statuses == [(200, None), (502, "upstream_error")]


async def _user_id(stack: Stack) -> str:
    return (await stack.hub.hub.auth.authenticate(f"Bearer {stack.key}")).user_id


async def test_files_api(stack: Stack) -> None:
    async with stack.http() as http:
        up = await http.post(
            "/v1/files",
            files={"file": ("notes.txt", "héllo".encode(), "text/plain")},
            data={"purpose": "user_data"},
        )
        assert up.status_code == 200, up.text
        file_id = up.json()["id"]
        listed = (await http.get("/v1/files")).json()["data"]
        assert any(f["id"] == file_id for f in listed)
        share = (await http.post(f"/v1/files/{file_id}/share", json={"expires_in": 60})).json()
        async with httpx.AsyncClient() as anonymous:
            assert (await anonymous.get(share["url"])).content == "héllo".encode()
            assert (await anonymous.get(share["url"].replace("sig=", "sig=0"))).status_code == 404
        bob = await stack.hub.new_user("bob")
        async with stack.http(bob) as other:
            assert (await other.get(f"/v1/files/{file_id}")).status_code == 404
            assert (await other.get(f"/v1/files/{file_id}/content")).status_code == 404
        assert (await http.delete(f"/v1/files/{file_id}")).json()["deleted"] is True
        assert (await http.get(f"/v1/files/{file_id}")).status_code == 404


async def test_files_list_pages_like_jobs_and_batches(stack: Stack) -> None:
    async with stack.http() as http:
        ids = []
        for name in ("a.txt", "b.txt", "c.txt"):
            up = await http.post("/v1/files", files={"file": (name, b"x", "text/plain")})
            ids.append(up.json()["id"])
        first = (await http.get("/v1/files", params={"limit": 2})).json()
        assert first["object"] == "list" and first["has_more"] is True
        assert [f["id"] for f in first["data"]] == [ids[2], ids[1]]
        assert (first["first_id"], first["last_id"]) == (ids[2], ids[1])
        rest = (await http.get("/v1/files", params={"limit": 2, "after": first["last_id"]})).json()
        assert [f["id"] for f in rest["data"]] == [ids[0]] and rest["has_more"] is False
        assert rest["first_id"] == rest["last_id"] == ids[0]
