"""A ComfyUI stub: ``/prompt``, ``/ws``, ``/history``, ``/view``, ``/interrupt``, ``/queue``,
``/upload/image``, ``/system_stats``, with the shapes of ComfyUI v0.3 ``server.py``.

Prompts run one at a time in the background: ``execution_start``, then for the sampler
node (``KSampler``) one ``progress`` message per step, ``executing`` for each node,
``executed`` for output nodes, ``executing`` with ``node: null`` and
``execution_success`` at the end (messages go to the WebSocket whose ``clientId`` was
given as the prompt's ``client_id``). Output nodes: ``SaveImage`` (PNG images of the
``EmptyLatentImage`` size and ``batch_size``) and ``VHS_VideoCombine``/``SaveVideo``
(an MP4 under ``gifs``). Validation follows ComfyUI: an unknown ``class_type`` or a
``LoadImage`` of a file that was never uploaded is a 400 with ``error`` and
``node_errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..fake_media import mp4_chunks, png_bytes
from .common import StubControl

__all__ = ["KNOWN_NODES", "ComfyState", "create_comfyui"]

KNOWN_NODES = frozenset(
    {
        "CheckpointLoaderSimple",
        "CLIPTextEncode",
        "EmptyLatentImage",
        "KSampler",
        "VAEDecode",
        "SaveImage",
        "LoadImage",
        "VAEEncode",
        "VHS_VideoCombine",
        "SaveVideo",
        "EmptyHunyuanLatentVideo",
        "CreateVideo",
    }
)


@dataclass
class ComfyState:
    control: StubControl = field(default_factory=StubControl)
    uploads: dict[str, bytes] = field(default_factory=dict)
    history: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    sockets: dict[str, asyncio.Queue[dict[str, Any]]] = field(default_factory=dict)
    interrupted: set[str] = field(default_factory=set)
    running: str | None = None
    number: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    queue_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    submitted: list[str] = field(default_factory=list)
    answer_delay_s: float = 0.0
    """How long ``POST /prompt`` takes to answer once the prompt is queued (a busy server)."""


def _error(
    kind: str, message: str, details: str = "", node_errors: dict[str, Any] | None = None
) -> JSONResponse:
    return JSONResponse(
        {
            "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
            "node_errors": node_errors or {},
        },
        status_code=400,
    )


def create_comfyui(state: ComfyState | None = None) -> Starlette:
    state = state or ComfyState()
    control = state.control

    def send(client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        queue = state.sockets.get(client_id or "")
        if queue is not None:
            queue.put_nowait({"type": kind, "data": data})

    async def system_stats(request: Request) -> JSONResponse:
        control.record("GET", "/system_stats")
        return JSONResponse(
            {
                "system": {
                    "os": "posix",
                    "ram_total": 1 << 34,
                    "ram_free": 1 << 33,
                    "comfyui_version": "0.3.40",
                    "python_version": "3.11.9",
                    "pytorch_version": "2.5.1",
                    "embedded_python": False,
                    "argv": ["main.py"],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": 0,
                        "vram_free": 0,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            }
        )

    async def upload_image(request: Request) -> JSONResponse:
        control.record("POST", "/upload/image")
        async with request.form() as form:
            image = form.get("image")
            if image is None or isinstance(image, str):
                return JSONResponse(status_code=400, content=None)
            subfolder = str(form.get("subfolder") or "")
            name = image.filename or "upload.png"
            state.uploads[f"{subfolder}/{name}" if subfolder else name] = await image.read()
            kind = str(form.get("type") or "input")
        return JSONResponse({"name": name, "subfolder": subfolder, "type": kind})

    async def prompt(request: Request) -> JSONResponse:
        body = await request.json()
        control.record("POST", "/prompt", body)
        graph = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(graph, dict):
            return _error("invalid_prompt", "Invalid prompt", "no prompt")
        node_errors: dict[str, Any] = {}
        for node_id, node in graph.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type not in KNOWN_NODES:
                return _error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                )
            if class_type == "LoadImage" and node["inputs"].get("image") not in state.uploads:
                node_errors[node_id] = {
                    "errors": [
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"image: '{node['inputs'].get('image')}' not in list",
                            "extra_info": {"input_name": "image"},
                        }
                    ],
                    "dependent_outputs": [],
                    "class_type": "LoadImage",
                }
        if node_errors:
            return _error(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation", "", node_errors
            )
        prompt_id = str(uuid.uuid4())
        state.number += 1
        task = asyncio.get_running_loop().create_task(
            _execute(state, prompt_id, state.number, graph, body.get("client_id"), send)
        )
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)
        state.submitted.append(prompt_id)
        if state.answer_delay_s:
            await asyncio.sleep(state.answer_delay_s)
        return JSONResponse({"prompt_id": prompt_id, "number": state.number, "node_errors": {}})

    async def history(request: Request) -> JSONResponse:
        prompt_id = request.path_params["prompt_id"]
        control.record("GET", f"/history/{prompt_id}")
        if control.hang and state.running == prompt_id:
            await control.stall()
        entry = state.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry is not None else {})

    async def view(request: Request) -> Response:
        control.record("GET", "/view")
        key = f"{request.query_params.get('subfolder', '')}/{request.query_params.get('filename', '')}"
        found = state.files.get(key)
        if found is None or request.query_params.get("type", "output") != "output":
            return Response(status_code=404)
        data, content_type = found
        return Response(data, media_type=content_type)

    async def interrupt(request: Request) -> Response:
        body: Any = None
        with contextlib.suppress(Exception):
            body = await request.json()
        control.record("POST", "/interrupt", body)
        control.interrupts += 1
        target = body.get("prompt_id") if isinstance(body, dict) else None
        if target is None or target == state.running:
            if state.running is not None:
                state.interrupted.add(state.running)
        return Response(status_code=200)

    async def queue(request: Request) -> Response:
        body = await request.json()
        control.record("POST", "/queue", body)
        for prompt_id in body.get("delete", []) if isinstance(body, dict) else []:
            control.cancelled.append(str(prompt_id))
        return Response(status_code=200)

    async def ws(websocket: WebSocket) -> None:
        client_id = websocket.query_params.get("clientId") or uuid.uuid4().hex
        await websocket.accept()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        state.sockets[client_id] = queue

        async def forward() -> None:
            await websocket.send_json(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id},
                }
            )
            while True:
                await websocket.send_json(await queue.get())

        async def until_closed() -> None:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass

        tasks = [asyncio.ensure_future(forward()), asyncio.ensure_future(until_closed())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                    await task
            if state.sockets.get(client_id) is queue:
                del state.sockets[client_id]

    return Starlette(
        routes=[
            Route("/system_stats", system_stats),
            Route("/upload/image", upload_image, methods=["POST"]),
            Route("/prompt", prompt, methods=["POST"]),
            Route("/history/{prompt_id}", history),
            Route("/view", view),
            Route("/interrupt", interrupt, methods=["POST"]),
            Route("/queue", queue, methods=["POST"]),
            WebSocketRoute("/ws", ws),
        ]
    )


async def _execute(
    state: ComfyState, prompt_id: str, number: int, graph: dict[str, Any], client_id: str | None, send: Any
) -> None:
    async with state.queue_lock:  # one prompt at a time, like ComfyUI's queue
        await _run_prompt(state, prompt_id, number, graph, client_id, send)


async def _run_prompt(
    state: ComfyState, prompt_id: str, number: int, graph: dict[str, Any], client_id: str | None, send: Any
) -> None:
    control = state.control
    state.running = prompt_id
    control.started.set()
    started = int(time.time() * 1000)
    messages: list[Any] = [["execution_start", {"prompt_id": prompt_id, "timestamp": started}]]
    send(client_id, "execution_start", {"prompt_id": prompt_id, "timestamp": started})
    outputs: dict[str, Any] = {}
    try:
        latent: dict[str, Any] = next(
            (
                n["inputs"]
                for n in graph.values()
                if n["class_type"] in ("EmptyLatentImage", "EmptyHunyuanLatentVideo")
            ),
            {},
        )
        for node_id, node in graph.items():
            if prompt_id in state.interrupted:
                break
            send(client_id, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
            if node["class_type"] == "KSampler":
                steps = int(node["inputs"].get("steps") or control.steps)
                for value in range(1, steps + 1):
                    await control.step(value)
                    if prompt_id in state.interrupted:
                        break
                    send(
                        client_id,
                        "progress",
                        {"value": value, "max": steps, "prompt_id": prompt_id, "node": node_id},
                    )
                if control.fail is not None and prompt_id not in state.interrupted:
                    message, control.fail = control.fail, None
                    error = {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": "KSampler",
                        "executed": [],
                        "exception_message": message,
                        "exception_type": "RuntimeError",
                        "traceback": [],
                        "current_inputs": {},
                        "current_outputs": {},
                    }
                    send(client_id, "execution_error", error)
                    messages.append(["execution_error", error])
                    state.history[prompt_id] = _entry(number, prompt_id, graph, {}, "error", messages)
                    return
            elif node["class_type"] == "SaveImage":
                images = []
                for index in range(int(latent.get("batch_size") or 1)):
                    name = f"{node['inputs'].get('filename_prefix', 'ComfyUI')}_{number:05d}_{index}_.png"
                    width, height = int(latent.get("width") or 64), int(latent.get("height") or 64)
                    state.files[f"/{name}"] = (
                        png_bytes(min(width, 64), min(height, 64), seed=number + index),
                        "image/png",
                    )
                    images.append({"filename": name, "subfolder": "", "type": "output"})
                outputs[node_id] = {"images": images}
                send(
                    client_id,
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": outputs[node_id],
                        "prompt_id": prompt_id,
                    },
                )
            elif node["class_type"] in ("VHS_VideoCombine", "SaveVideo"):
                name = f"{node['inputs'].get('filename_prefix', 'ComfyUI')}_{number:05d}.mp4"
                state.files[f"/{name}"] = (b"".join(mp4_chunks(4096, seed=number)), "video/mp4")
                key = "gifs" if node["class_type"] == "VHS_VideoCombine" else "images"
                item: dict[str, Any] = {"filename": name, "subfolder": "", "type": "output"}
                if key == "gifs":
                    item.update(format="video/h264-mp4", frame_rate=24.0)
                outputs[node_id] = {key: [item], **({"animated": [True]} if key == "images" else {})}
                send(
                    client_id,
                    "executed",
                    {
                        "node": node_id,
                        "display_node": node_id,
                        "output": outputs[node_id],
                        "prompt_id": prompt_id,
                    },
                )
        if prompt_id in state.interrupted:
            data = {
                "prompt_id": prompt_id,
                "node_id": "3",
                "node_type": "KSampler",
                "executed": [],
                "timestamp": int(time.time() * 1000),
            }
            send(client_id, "execution_interrupted", data)
            messages.append(["execution_interrupted", data])
            state.history[prompt_id] = _entry(number, prompt_id, graph, outputs, "error", messages)
            return
        send(client_id, "executing", {"node": None, "prompt_id": prompt_id})
        done = {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)}
        send(client_id, "execution_success", done)
        messages.append(["execution_success", done])
        state.history[prompt_id] = _entry(number, prompt_id, graph, outputs, "success", messages)
    finally:
        state.running = None


def _entry(
    number: int,
    prompt_id: str,
    graph: dict[str, Any],
    outputs: dict[str, Any],
    status: str,
    messages: list[Any],
) -> dict[str, Any]:
    return {
        "prompt": [number, prompt_id, graph, {}, list(outputs)],
        "outputs": outputs,
        "status": {"status_str": status, "completed": status == "success", "messages": messages},
        "meta": {
            node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
            for node in outputs
        },
    }
