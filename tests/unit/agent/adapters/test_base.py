"""The adapter seam: request parsing, engine calls and their error mapping, interrupt on
cancel, and the small value helpers every adapter uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from inference_club.agent.adapters.base import (
    Adapter,
    Answer,
    EngineCall,
    EngineFailed,
    EngineRejected,
    EngineTimeout,
    Form,
    as_float,
    as_int,
    error_detail,
    interrupting,
    media_type,
    parse_query,
    parse_size,
    pick,
)
from inference_club.testing.servers import free_port

from .rig import StubHost, form_call, module_loop, service


def engine_app(release: asyncio.Event) -> Starlette:
    """A tiny engine: a JSON answer, a non-JSON one, an error, one that waits, one that echoes auth."""

    async def ok(request: Request) -> Response:
        return JSONResponse({"data": [1, 2]})

    async def not_json(request: Request) -> Response:
        return PlainTextResponse("<html>hello</html>")

    async def teapot(request: Request) -> Response:
        return JSONResponse({"detail": "short and stout"}, status_code=418)

    async def broken(request: Request) -> Response:
        return JSONResponse({"error": {"message": "out of memory"}}, status_code=500)

    async def slow(request: Request) -> Response:
        await release.wait()
        return JSONResponse({})

    async def auth(request: Request) -> Response:
        return JSONResponse({"authorization": request.headers.get("authorization")})

    return Starlette(
        routes=[
            Route("/ok", ok),
            Route("/not-json", not_json),
            Route("/teapot", teapot),
            Route("/broken", broken),
            Route("/slow", slow),
            Route("/auth", auth),
        ]
    )


@pytest_asyncio.fixture(loop_scope="module")
async def engine(stub_host: StubHost) -> AsyncIterator[tuple[Adapter, str]]:
    """A bound base Adapter pointing at ``engine_app`` (with an API key), and the app's URL."""
    release = asyncio.Event()
    async with stub_host.mount(engine_app(release)) as url:
        adapter = Adapter(service(url=url + "/", api_key="engine-key"))
        adapter.bind(stub_host.client)
        yield adapter, url
    release.set()


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# --------------------------------------------------------------------------- what arrives from the hub


def test_call_json_accepts_an_object_and_refuses_the_rest() -> None:
    def call(body: bytes) -> EngineCall:
        return EngineCall("POST", "/v1/x", {}, "application/json", body, "m", "r")

    assert call(b'{"a": 1}').json() == {"a": 1}
    assert call(b"").json() == {}
    with pytest.raises(EngineRejected, match="not valid JSON"):
        call(b"{nope").json()
    with pytest.raises(EngineRejected, match="must be a JSON object"):
        call(b"[1, 2]").json()


async def test_call_form_keeps_fields_and_the_first_file_of_each_name() -> None:
    call = form_call(
        "/v1/audio/transcriptions",
        {"model": "w", "language": "  "},
        {"file": ("a.wav", b"RIFF....", "audio/wav")},
    )
    form = await call.form()
    assert form.fields == {"model": "w", "language": "  "}
    assert form.files == {"file": ("a.wav", "audio/wav", b"RIFF....")}
    assert form.text("model") == "w"
    assert form.text("language") is None  # blank counts as not given
    assert form.text("missing") is None

    urlencoded = EngineCall("POST", "/v1/x", {}, "application/x-www-form-urlencoded", b"a=1&a=2&b=", "m", "r")
    assert (await urlencoded.form()).fields == {"a": "1", "b": ""}


async def test_a_broken_multipart_body_is_a_client_error() -> None:
    call = EngineCall("POST", "/v1/x", {}, "multipart/form-data", b"--x\r\nnonsense", "m", "r")
    with pytest.raises(EngineRejected, match="not valid form data"):
        await call.form()


def test_parse_query_splits_the_route() -> None:
    assert parse_query("/v1/audio?path=%2Ftmp%2Fa&x=") == ("/v1/audio", {"path": "/tmp/a", "x": ""})
    assert parse_query("/v1/models") == ("/v1/models", {})


def test_rejections_keep_a_client_status_and_answers_carry_json() -> None:
    assert EngineRejected("x", status=404).status == 404
    assert EngineRejected("x", status=500).status == 400  # never a server status
    rejected = EngineRejected("bad", param="seed")
    assert (rejected.status, rejected.param, str(rejected)) == (400, "seed", "bad")
    answer = Answer.json({"ok": True}, status=201)
    assert (orjson.loads(answer.body), answer.content_type, answer.status) == (
        {"ok": True},
        "application/json",
        201,
    )
    assert Form().text("x") is None


# --------------------------------------------------------------------------- calling the engine


def test_an_unbound_adapter_says_so_and_sends_its_key() -> None:
    adapter = Adapter(service(url="http://127.0.0.1:5/", api_key="k"))
    with pytest.raises(RuntimeError, match="no HTTP client"):
        _ = adapter.client
    assert adapter.base_url == "http://127.0.0.1:5"
    assert adapter.headers() == {"authorization": "Bearer k"}
    assert Adapter(service()).headers() == {}
    assert "http://127.0.0.1:5" in repr(adapter)


@module_loop
async def test_request_reaches_the_engine_with_its_key(engine: tuple[Adapter, str]) -> None:
    adapter, _ = engine
    response = await adapter.request("GET", "/auth")
    assert response.json() == {"authorization": "Bearer engine-key"}
    assert await adapter.engine_json(await adapter.request("GET", "/ok"), "the listing") == {"data": [1, 2]}


@module_loop
async def test_engine_answers_map_to_client_or_upstream_errors(engine: tuple[Adapter, str]) -> None:
    adapter, _ = engine
    with pytest.raises(EngineRejected, match="refused the teapot: short and stout") as info:
        await adapter.engine_json(await adapter.request("GET", "/teapot"), "the teapot")
    assert info.value.status == 418
    with pytest.raises(EngineFailed, match=r"failed the job \(500\): out of memory"):
        await adapter.engine_json(await adapter.request("GET", "/broken"), "the job")
    with pytest.raises(EngineFailed, match="answered the page with invalid JSON"):
        await adapter.engine_json(await adapter.request("GET", "/not-json"), "the page")


@module_loop
async def test_an_engine_that_is_down_or_too_slow(engine: tuple[Adapter, str]) -> None:
    adapter, _ = engine
    with pytest.raises(EngineTimeout, match="did not answer GET /slow in time"):
        await adapter.request("GET", "/slow", timeout=0.05)
    down = Adapter(service(url=refused_url()))
    down.bind(adapter.client)
    with pytest.raises(EngineFailed, match=r"unreachable \(ConnectError\)"):
        await down.request("GET", "/ok")


@module_loop
async def test_listing_json_tells_down_from_unusable(engine: tuple[Adapter, str]) -> None:
    adapter, url = engine
    client = adapter.client
    assert await adapter.listing_json(client, "/ok", timeout=2) == ({"data": [1, 2]}, None)
    _, failed = await adapter.listing_json(client, "/teapot", timeout=2)
    assert failed is not None and failed.reachable and failed.models is None
    assert failed.problem == f"HTTP 418 from {url}/teapot"
    _, failed = await adapter.listing_json(client, "/not-json", timeout=2)
    assert failed is not None and failed.reachable and failed.problem == f"invalid JSON from {url}/not-json"
    down = Adapter(service(url=refused_url()))
    _, failed = await down.listing_json(client, "/ok", timeout=2)
    assert failed is not None and not failed.reachable and "ConnectError" in (failed.problem or "")


@module_loop
async def test_probe_only_asks_whether_the_engine_answers(engine: tuple[Adapter, str]) -> None:
    adapter, url = engine
    client = adapter.client
    up = await adapter.probe(client, "/ok", timeout=2)
    assert (up.reachable, up.models, up.problem) == (True, (), None)
    refusing = await adapter.probe(client, "/teapot", timeout=2)
    assert (refusing.reachable, refusing.models, refusing.problem) == (
        True,
        None,
        f"HTTP 418 from {url}/teapot",
    )
    down = await Adapter(service(url=refused_url())).probe(client, "/ok", timeout=2)
    assert not down.reachable and down.models is None


async def test_engine_http_errors_map_by_status() -> None:
    adapter = Adapter(service())
    request = httpx.Request("POST", "http://x/sdapi/v1/txt2img")
    with pytest.raises(EngineRejected) as info:
        adapter.raise_for_status(
            httpx.Response(404, json={"detail": "Not Found"}, request=request), "txt2img"
        )
    assert info.value.status == 404 and "Not Found" in str(info.value)
    with pytest.raises(EngineFailed, match="busy"):
        adapter.raise_for_status(httpx.Response(429, text="slow down", request=request), "txt2img")
    with pytest.raises(EngineFailed, match=r"\(500\): boom"):
        adapter.raise_for_status(httpx.Response(500, json={"error": "boom"}, request=request), "txt2img")
    adapter.raise_for_status(httpx.Response(302, request=request), "txt2img")  # not an error


@pytest.mark.parametrize(
    ("response", "detail"),
    [
        (httpx.Response(400, json={"error": {"message": "bad"}, "detail": "more"}), "bad: more"),
        (httpx.Response(422, json={"errors": [{"loc": "x"}]}), '[{"loc":"x"}]'),
        (httpx.Response(500, json=["odd"]), '["odd"]'),
        (httpx.Response(500, json={"other": 1}), '{"other":1}'),
        (httpx.Response(502, text="  Bad Gateway \n"), "Bad Gateway"),
        (httpx.Response(503, text=""), "HTTP 503"),
    ],
)
def test_error_detail_quotes_the_engine_briefly(response: httpx.Response, detail: str) -> None:
    assert error_detail(response) == detail


def test_error_detail_is_short() -> None:
    assert len(error_detail(httpx.Response(500, text="x" * 1000))) == 300


# --------------------------------------------------------------------------- interrupt


async def test_interrupt_runs_when_the_request_is_cancelled() -> None:
    calls: list[str] = []

    async def interrupt() -> None:
        calls.append("interrupt")

    async def job() -> None:
        async with interrupting(interrupt):
            await asyncio.sleep(30)

    task = asyncio.create_task(job())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == ["interrupt"]


async def test_interrupt_runs_on_timeout_only() -> None:
    calls: list[str] = []

    async def interrupt() -> None:
        calls.append("interrupt")

    async with interrupting(interrupt):
        pass
    with pytest.raises(EngineFailed):
        async with interrupting(interrupt):
            raise EngineFailed("the engine broke by itself")
    assert calls == []
    with pytest.raises(EngineTimeout):
        async with interrupting(interrupt):
            raise EngineTimeout("late")
    with pytest.raises(TimeoutError):
        async with interrupting(interrupt):
            raise TimeoutError
    assert calls == ["interrupt", "interrupt"]


async def test_a_failing_interrupt_is_logged_and_the_cancel_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def interrupt() -> None:
        raise httpx.ConnectError("engine gone")

    with pytest.raises(EngineTimeout):
        async with interrupting(interrupt, what="prompt p1"):
            raise EngineTimeout("late")
    assert "could not interrupt the engine's prompt p1" in caplog.text


# --------------------------------------------------------------------------- value helpers


def test_pick_takes_the_first_present_name() -> None:
    assert pick({"a": None, "b": 0, "c": 1}, "a", "b", "c") == 0
    assert pick({}, "a") is None


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("7", 7), (7, 7), (7.9, 7), ("-2", -2)]
)
def test_as_int(value: object, expected: int | None) -> None:
    assert as_int(value, "n") == expected


@pytest.mark.parametrize("value", [True, "seven", "7.5", [1]])
def test_as_int_refuses_non_integers(value: object) -> None:
    with pytest.raises(EngineRejected, match="'n' must be an integer") as info:
        as_int(value, "n")
    assert info.value.param == "n"


def test_as_float() -> None:
    assert (as_float(None, "x"), as_float("", "x"), as_float("0.5", "x"), as_float(2, "x")) == (
        None,
        None,
        0.5,
        2.0,
    )
    bad: object
    for bad in (False, "half", {}):
        with pytest.raises(EngineRejected, match="'strength' must be a number"):
            as_float(bad, "strength")


def test_parse_size() -> None:
    assert parse_size(None, (1, 2)) == (1, 2)
    assert parse_size("", (1, 2)) == (1, 2) and parse_size("auto", (1, 2)) == (1, 2)
    assert parse_size("640x480") == (640, 480)
    for bad in ("0x480", "640", "640x", "axb", "-1x5", 640):
        with pytest.raises(EngineRejected, match="'size' must look like 1024x1024"):
            parse_size(bad)


def test_media_type_by_extension() -> None:
    assert media_type("out.PNG") == "image/png"
    assert media_type("mesh.glb") == "model/gltf-binary"
    assert media_type("clip.opus") == "audio/ogg"
    assert media_type("noext") == "application/octet-stream"
    assert media_type("x.bin", "video/mp4") == "video/mp4"
