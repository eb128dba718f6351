"""ComfyUI (``type = "image"`` or ``"video"``): workflows as models.

Followed: ComfyUI's HTTP and WebSocket API as served by ``server.py`` of
comfyanonymous/ComfyUI v0.3.x (``POST /prompt``, ``GET /ws?clientId=``,
``GET /history/{prompt_id}``, ``GET /view``, ``POST /interrupt``, ``POST /queue``,
``POST /upload/image``, ``GET /system_stats``).

The service's ``workflows`` folder holds one file per model, ``NAME.json``::

    {"workflow": { ...the API-format prompt ("Save (API)" in ComfyUI)... },
     "inputs": {"prompt": "6.text", "negative_prompt": "7.text", "seed": "3.seed",
                "steps": "3.steps", "width": "5.width", "height": "5.height",
                "n": "5.batch_size", "image": "10.image", "frames": "12.length",
                "fps": "13.fps"},
     "outputs": ["9"]}

Each ``inputs`` entry names ``NODE_ID.INPUT_NAME`` in the workflow; ``prompt`` is
required, the others are optional (a request field with no mapping is ignored, except
``image``, which is refused). ``outputs`` (optional) lists the node ids whose files are
the answer; by default every output file is. The model id is the file name without
``.json``.

A request runs as: upload the input image (``/upload/image``), open the WebSocket,
``POST /prompt`` with the filled-in workflow, follow ``progress``/``executing``/
``execution_*`` messages (progress = the sampler's ``value/max``), then read
``/history/{id}`` and fetch every output file with ``/view``. Cancel (or the service
timeout) calls ``POST /interrupt`` for that prompt and deletes it from the queue.

Not supported: ``response_format=url`` from the engine (images always come back as
files), masks for edits, more than one input image.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import websockets
from websockets.exceptions import WebSocketException

from ..engines import DiscoveredModel, EngineListing
from .base import (
    Adapter,
    AdapterConfigError,
    Answer,
    EngineCall,
    EngineFailed,
    EngineRejected,
    as_float,
    as_int,
    interrupting,
    media_type,
    parse_size,
)

__all__ = ["ComfyUIAdapter", "Workflow", "load_workflow", "load_workflows"]

log = logging.getLogger("inference_club.agent.adapters.comfyui")

MAPPABLE = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "width",
    "height",
    "n",
    "image",
    "frames",
    "fps",
    "duration",
)


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    graph: dict[str, Any]
    inputs: dict[str, tuple[str, str]]  # request field -> (node id, input name)
    outputs: tuple[str, ...]

    def fill(self, values: dict[str, Any]) -> dict[str, Any]:
        """A copy of the graph with the mapped inputs set."""
        graph: dict[str, Any] = orjson.loads(orjson.dumps(self.graph))
        for name, value in values.items():
            target = self.inputs.get(name)
            if target is None or value is None:
                continue
            node, field = target
            graph[node]["inputs"][field] = value
        return graph


def load_workflow(path: Path) -> Workflow:
    """Read one workflow file; AdapterConfigError names the file and what is wrong."""
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise AdapterConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise AdapterConfigError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("workflow"), dict):
        raise AdapterConfigError(f'{path}: expected an object with a "workflow" (API format) and "inputs"')
    graph: dict[str, Any] = doc["workflow"]
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict) or "class_type" not in node:
            raise AdapterConfigError(
                f"{path}: workflow node {node_id!r} is not in API format (needs class_type and inputs); "
                'export it with "Save (API)"'
            )
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, dict):
        raise AdapterConfigError(f'{path}: missing the "inputs" mapping (e.g. {{"prompt": "6.text"}})')
    if "prompt" not in raw_inputs:
        raise AdapterConfigError(f'{path}: the "inputs" mapping has no "prompt" entry')
    inputs: dict[str, tuple[str, str]] = {}
    for name, target in raw_inputs.items():
        if name not in MAPPABLE:
            raise AdapterConfigError(f"{path}: inputs.{name}: unknown field (known: {', '.join(MAPPABLE)})")
        if not isinstance(target, str) or "." not in target:
            raise AdapterConfigError(f'{path}: inputs.{name}: expected "NODE_ID.INPUT_NAME", got {target!r}')
        node, _, field = target.partition(".")
        if node not in graph:
            raise AdapterConfigError(f"{path}: inputs.{name}: the workflow has no node {node!r}")
        inputs[name] = (node, field)
    outputs = doc.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, str) and o in graph for o in outputs):
        raise AdapterConfigError(f"{path}: outputs: expected a list of node ids of the workflow")
    return Workflow(path.stem, graph, inputs, tuple(outputs))


def load_workflows(folder: Path) -> tuple[dict[str, Workflow], list[str]]:
    """Every valid workflow of the folder, and one problem line per invalid file."""
    found: dict[str, Workflow] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.json")):
        try:
            workflow = load_workflow(path)
        except AdapterConfigError as exc:
            problems.append(str(exc))
            continue
        found[workflow.name] = workflow
    return found, problems


class ComfyUIAdapter(Adapter):
    name = "comfyui"
    service_types = ("image", "video")
    routes = ("/v1/images/generations", "/v1/images/edits", "/v1/videos/generations")

    def __init__(self, service: Any, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(service, client)
        self.workflows: dict[str, Workflow] = {}
        self.client_id = uuid.uuid4().hex

    def check(self) -> None:
        if not self.service.workflows:
            raise AdapterConfigError('the comfyui engine needs workflows = "FOLDER" (workflow files)')
        folder = Path(self.service.workflows).expanduser()
        if not folder.is_dir():
            raise AdapterConfigError(f"workflows: {folder} is not a folder")
        self.workflows, problems = load_workflows(folder)
        for problem in problems:
            log.error("comfyui workflow skipped: %s", problem)
        if not self.workflows:
            log.error("comfyui: no usable workflow in %s; the service serves no model", folder)

    async def list_models(self, client: httpx.AsyncClient, *, timeout: float) -> EngineListing:
        probe = await self.probe(client, "/system_stats", timeout=timeout)
        if probe.models is None:
            return probe
        return EngineListing(True, tuple(DiscoveredModel(id=name) for name in self.workflows))

    # ------------------------------------------------------------------ a request

    async def run(self, call: EngineCall) -> Answer:
        workflow = self.workflows.get(call.model)
        if workflow is None:
            raise EngineRejected(f"no ComfyUI workflow named {call.model!r}", status=404, param="model")
        values, wanted = await self._values(call, workflow)
        graph = workflow.fill(values)
        started = time.time()
        files = await self._execute(call, graph, workflow)
        if call.route == "/v1/videos/generations":
            videos = [f for f in files if f[1].startswith(("video/", "image/gif", "image/webp"))] or files
            _, content_type, data = videos[0]
            return Answer(data, content_type)
        images = [f for f in files if f[1].startswith("image/")]
        if not images:
            raise EngineFailed("the ComfyUI workflow produced no image")
        if wanted is not None:
            images = images[:wanted]
        return Answer.json(
            {
                "created": int(started),
                "data": [{"b64_json": base64.b64encode(data).decode()} for _, _, data in images],
            }
        )

    async def _values(self, call: EngineCall, workflow: Workflow) -> tuple[dict[str, Any], int | None]:
        image: tuple[str, str, bytes] | None = None
        if call.route == "/v1/images/edits":
            form = await call.form()
            data: dict[str, Any] = dict(form.fields)
            image = form.files.get("image") or form.files.get("image[]")
            if image is None:
                raise EngineRejected("'image' is required", param="image")
        else:
            data = call.json()
            if call.route == "/v1/videos/generations" and isinstance(data.get("image"), str):
                image = ("first-frame.png", "image/png", _b64(data["image"], "image"))
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise EngineRejected("'prompt' is required", param="prompt")
        values: dict[str, Any] = {"prompt": prompt, "negative_prompt": data.get("negative_prompt")}
        if data.get("size") is not None or "width" in workflow.inputs:
            width, height = parse_size(data.get("size"), (0, 0))
            values["width"] = as_int(data.get("width"), "width") or width or None
            values["height"] = as_int(data.get("height"), "height") or height or None
        n = as_int(data.get("n"), "n")
        values["n"] = n
        seed = as_int(data.get("seed"), "seed")
        values["seed"] = seed if seed is not None else int.from_bytes(uuid.uuid4().bytes[:6], "big")
        values["steps"] = as_int(data.get("steps"), "steps")
        fps = as_int(data.get("fps"), "fps")
        values["fps"] = fps
        duration = as_float(data.get("duration"), "duration")
        values["duration"] = duration
        if duration is not None and "frames" in workflow.inputs:
            values["frames"] = max(1, round(duration * (fps or 24)))
        values["frames"] = as_int(data.get("frames"), "frames") or values.get("frames")
        if image is not None:
            if "image" not in workflow.inputs:
                raise EngineRejected(f"the workflow {workflow.name!r} takes no input image", param="image")
            values["image"] = await self._upload(image)
        elif (
            "image" in workflow.inputs
            and workflow.graph[workflow.inputs["image"][0]]["class_type"] == "LoadImage"
        ):
            raise EngineRejected(f"the workflow {workflow.name!r} needs an input image", param="image")
        return values, n

    async def _upload(self, image: tuple[str, str, bytes]) -> str:
        filename, content_type, data = image
        response = await self.request(
            "POST",
            "/upload/image",
            files={"image": (f"ic-{uuid.uuid4().hex[:12]}-{Path(filename).name}", data, content_type)},
            data={"overwrite": "true", "type": "input"},
        )
        answer = await self.engine_json(response, "the image upload")
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise EngineFailed("ComfyUI answered the image upload without a file name")
        sub = answer.get("subfolder") or ""
        return f"{sub}/{answer['name']}" if sub else str(answer["name"])

    async def _execute(
        self, call: EngineCall, graph: dict[str, Any], workflow: Workflow
    ) -> list[tuple[str, str, bytes]]:
        prompt_id: str | None = None

        async def interrupt() -> None:
            if prompt_id is None:
                return
            await self.request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=5.0)
            await self.request("POST", "/queue", json={"delete": [prompt_id]}, timeout=5.0)

        async with contextlib.AsyncExitStack() as stack:
            ws = await stack.enter_async_context(_Events(self._ws_url(), self.headers()))
            call.report(0.0, "queued")
            prompt_id = await self._submit(graph)
            async with interrupting(interrupt, what=f"prompt {prompt_id}"):
                await self._follow(call, ws, prompt_id)
                return await self._outputs(prompt_id, workflow)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _submit(self, graph: dict[str, Any]) -> str:
        """``POST /prompt``; the prompt's id.

        ComfyUI queues the prompt before it answers, so a cancel that arrives meanwhile
        waits (briefly) for the answer and deletes the prompt it names; otherwise the
        prompt would run with nobody waiting for it.
        """
        submit = asyncio.ensure_future(
            self.request("POST", "/prompt", json={"prompt": graph, "client_id": self.client_id})
        )
        try:
            response = await asyncio.shield(submit)
        except asyncio.CancelledError:
            await self._drop_submitted(submit)
            raise
        return await self._prompt_id(response)

    async def _prompt_id(self, response: httpx.Response) -> str:
        if response.status_code == 400:
            raise EngineRejected(f"ComfyUI refused the workflow: {_prompt_error(response)}")
        answer = await self.engine_json(response, "the prompt")
        if not isinstance(answer, dict) or not isinstance(answer.get("prompt_id"), str):
            raise EngineFailed("ComfyUI answered /prompt without a prompt_id")
        return str(answer["prompt_id"])

    async def _drop_submitted(self, submit: asyncio.Future[httpx.Response]) -> None:
        try:
            async with asyncio.timeout(5.0):
                prompt_id = await self._prompt_id(await submit)
                await self.request("POST", "/queue", json={"delete": [prompt_id]}, timeout=5.0)
                await self.request("POST", "/interrupt", json={"prompt_id": prompt_id}, timeout=5.0)
        except Exception as exc:  # a refused or lost prompt has nothing to delete
            submit.cancel()
            log.warning("could not delete a prompt submitted before a cancel: %r", exc)

    async def _follow(self, call: EngineCall, ws: _Events, prompt_id: str) -> None:
        """Wait for the prompt to finish, reporting progress; poll /history without a socket."""
        while True:
            message = await ws.next(timeout=max(self.service.poll_interval_s, 0.05))
            if message is None:
                # no socket, or a quiet moment: the history says whether it is done
                if await self._finished(prompt_id):
                    return
                continue
            kind = message.get("type")
            data = _obj(message.get("data"))
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if kind == "progress":
                value, maximum = data.get("value"), data.get("max")
                if isinstance(value, int | float) and isinstance(maximum, int | float) and maximum > 0:
                    call.report(value / maximum, f"node {data.get('node') or '?'}: step {value}/{maximum}")
            elif kind == "execution_start":
                call.report(0.0, "running")
            elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return
            elif kind == "execution_success":
                return
            elif kind == "execution_error":
                raise EngineFailed(
                    f"ComfyUI failed in node {data.get('node_id')} ({data.get('node_type')}): "
                    f"{data.get('exception_message') or 'no message'}"
                )
            elif kind == "execution_interrupted":
                raise EngineFailed("the ComfyUI prompt was interrupted on the engine")

    async def _history(self, prompt_id: str) -> dict[str, Any] | None:
        response = await self.request("GET", f"/history/{prompt_id}")
        doc = await self.engine_json(response, "the history")
        entry = doc.get(prompt_id) if isinstance(doc, dict) else None
        return entry if isinstance(entry, dict) else None

    async def _finished(self, prompt_id: str) -> bool:
        entry = await self._history(prompt_id)
        if entry is None:
            return False
        status = _obj(entry.get("status"))
        if status.get("status_str") == "error":
            raise EngineFailed(f"ComfyUI failed the prompt: {_status_message(status)}")
        return bool(status.get("completed", True))

    async def _outputs(self, prompt_id: str, workflow: Workflow) -> list[tuple[str, str, bytes]]:
        entry = await self._history(prompt_id)
        if entry is None:
            raise EngineFailed(f"ComfyUI has no history for prompt {prompt_id}")
        status = _obj(entry.get("status"))
        if status.get("status_str") == "error":
            raise EngineFailed(f"ComfyUI failed the prompt: {_status_message(status)}")
        outputs = _obj(entry.get("outputs"))
        files: list[tuple[str, str, bytes]] = []
        for node_id, output in outputs.items():
            if workflow.outputs and node_id not in workflow.outputs:
                continue
            if not isinstance(output, dict):
                continue
            for key in ("images", "gifs", "videos", "audio"):
                for item in output.get(key) or []:
                    if not isinstance(item, dict) or item.get("type", "output") != "output":
                        continue
                    filename = item.get("filename")
                    if not isinstance(filename, str):
                        continue
                    files.append(await self._view(filename, item.get("subfolder") or "", item.get("format")))
        if not files:
            raise EngineFailed("the ComfyUI workflow produced no output file")
        return files

    async def _view(self, filename: str, subfolder: str, fmt: Any) -> tuple[str, str, bytes]:
        response = await self.request(
            "GET", "/view", params={"filename": filename, "subfolder": subfolder, "type": "output"}
        )
        self.raise_for_status(response, f"the download of {filename}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        if not content_type or content_type == "application/octet-stream":
            content_type = fmt if isinstance(fmt, str) and "/" in fmt else media_type(filename)
            if content_type.startswith("video/h264"):
                content_type = "video/mp4"
        return filename, content_type, response.content

    def _ws_url(self) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws", f"clientId={self.client_id}", ""))


class _Events:
    """ComfyUI's WebSocket as a queue of JSON messages; binary previews are skipped.

    When the socket cannot be opened (a proxy in front of ComfyUI, say) ``next`` just
    waits, so the adapter falls back to polling ``/history``.
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self._ws: Any = None

    async def __aenter__(self) -> _Events:
        try:
            self._ws = await websockets.connect(
                self.url,
                additional_headers=self.headers,
                open_timeout=5.0,
                max_size=64 * 1024 * 1024,
                ping_interval=None,
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.info("no ComfyUI WebSocket (%s); polling the history instead", exc)
            self._ws = None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._ws.close()

    async def next(self, *, timeout: float) -> dict[str, Any] | None:
        if self._ws is None:
            await asyncio.sleep(timeout)
            return None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that
                # arrives as a message does, and the adapter would follow a cancelled prompt on
                async with asyncio.timeout(remaining):
                    raw = await self._ws.recv()
            except TimeoutError:
                return None
            except WebSocketException:
                self._ws = None
                return None
            if isinstance(raw, bytes):
                continue  # preview images
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict):
                return message


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _b64(value: str, name: str) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise EngineRejected(f"'{name}' must be a data URI or base64", param=name) from None


def _prompt_error(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return response.text[:300]
    error = doc.get("error") if isinstance(doc, dict) else None
    message = error.get("message") if isinstance(error, dict) else str(error or "")
    details = []
    node_errors = doc.get("node_errors") if isinstance(doc, dict) else None
    if isinstance(node_errors, dict):
        for node_id, info in node_errors.items():
            for err in (info or {}).get("errors", []) if isinstance(info, dict) else []:
                if isinstance(err, dict):
                    details.append(f"node {node_id}: {err.get('message')}: {err.get('details', '')}".strip())
    return "; ".join([message or "invalid prompt", *details])[:500]


def _status_message(status: dict[str, Any]) -> str:
    for entry in status.get("messages") or []:
        if (
            isinstance(entry, list)
            and len(entry) == 2
            and entry[0] == "execution_error"
            and isinstance(entry[1], dict)
        ):
            return str(entry[1].get("exception_message") or "execution error")
    return "execution error"
