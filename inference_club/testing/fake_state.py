"""Settings, injected faults and counters of one fake engine.

The same FakeEngineState is driven in process (tests hold the object) and over HTTP
(`POST /_control`, `GET /_stats`, `POST /_reset` map onto the methods below).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

DEFAULT_MODELS = (
    "fake-chat",
    "fake-embed",
    "fake-whisper",
    "fake-tts",
    "fake-image",
    "fake-music",
    "fake-video",
    "fake-voice",
    "fake-mesh",
)
DEFAULT_VOICES = ("alloy", "echo", "fable", "nova", "onyx", "shimmer")


@dataclass
class Fault:
    """Misbehaviour applied to matching requests.

    Effects combine: wait `latency_s`, then either hang, or answer (`status` replaces the
    normal answer) and optionally stall or drop the connection after some body chunks.
    A stream's chunks are its SSE events; a plain answer is one or more byte chunks.
    """

    status: int | None = None
    body: Any = None  # JSON value or text; None means an OpenAI error envelope
    hang: bool = False  # never send anything
    stall_after: int | None = None  # send headers and this many chunks, then go silent
    break_after: int | None = None  # send headers and this many chunks, then drop the socket
    latency_s: float = 0.0
    times: int | None = None  # how many matching requests it applies to; None = all
    path: str | None = None  # only requests to this path, e.g. "/v1/chat/completions"
    model: str | None = None  # only requests for this model

    def matches(self, path: str, model: str | None) -> bool:
        if self.path is not None and self.path.rstrip("/") != path.rstrip("/"):
            return False
        return self.model is None or self.model == model

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        fault = cls(**data)
        fault.validate()
        return fault

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """The short per-request form: comma-separated `status=503`, `hang`, `stall[=N]`,
        `break[=N]`, `latency=SECONDS`, e.g. `"latency=0.2,status=500"`."""
        fault = cls()
        for raw_item in spec.split(","):
            name, _, value = raw_item.strip().partition("=")
            try:
                if name == "status":
                    fault.status = int(value)
                elif name == "hang":
                    fault.hang = True
                elif name == "stall":
                    fault.stall_after = int(value or 0)
                elif name == "break":
                    fault.break_after = int(value or 0)
                elif name == "latency":
                    fault.latency_s = float(value)
                elif name:
                    raise ValueError(f"unknown fault {name!r}")
            except ValueError as exc:
                raise ValueError(f"bad fault spec {spec!r}: {exc}") from exc
        fault.validate()
        return fault

    def validate(self) -> None:
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"fault status out of range: {self.status}")
        if self.latency_s < 0:
            raise ValueError("fault latency_s must be >= 0")
        for name in ("stall_after", "break_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"fault {name} must be >= 0")
        if self.times is not None and self.times < 1:
            raise ValueError("fault times must be >= 1 (or null for every request)")


@dataclass
class FakeEngineSettings:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    strict_models: bool = False  # 404 model_not_found for models not listed
    api_key: str | None = None  # when set, /v1 requests need `Authorization: Bearer <key>`
    reply: str | None = None  # fixed chat/completion text instead of echoing the input
    #: ``[substring, text]`` pairs: a chat/completion whose prompt contains the substring
    #: answers that text (the first match wins; before ``reply``).
    replies: list[list[str]] = field(default_factory=list)
    stream_chunks: int | None = None  # content chunks per stream; None = one per word
    chunk_delay_s: float = 0.0  # pause between stream chunks
    embedding_dimensions: int = 16
    media_size_bytes: int | None = None  # size of speech/music/voice/video answers
    mesh_format: Literal["glb", "json"] = "glb"  # 3D answer: GLB bytes or {"data":[{b64_json}]}
    voices: list[str] = field(default_factory=lambda: list(DEFAULT_VOICES))
    # How usage is reported: "openai" (and Ollama's OpenAI API): in the answer, and in a
    # final choices-less chunk when the stream asks include_usage; "llamacpp": that chunk
    # always, with llama.cpp's extra "timings"; "vllm": nested *_tokens_details and extra
    # fields; "none": never.
    usage_style: Literal["openai", "llamacpp", "vllm", "none"] = "openai"
    responses_api: bool = True  # serve POST /v1/responses (llama-cpp-python's server does not)

    def update(self, data: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        if data.get("mesh_format", self.mesh_format) not in ("glb", "json"):
            raise ValueError("mesh_format must be 'glb' or 'json'")
        if data.get("usage_style", self.usage_style) not in ("openai", "llamacpp", "vllm", "none"):
            raise ValueError("usage_style must be 'openai', 'llamacpp', 'vllm' or 'none'")
        for name, value in data.items():
            if name == "replies" and not (
                isinstance(value, list)
                and all(
                    isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in value
                )
            ):
                raise ValueError("replies must be a list of [substring, reply] pairs of strings")
            setattr(self, name, list(value) if name in ("models", "voices", "replies") else value)


@dataclass
class ModelStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


@dataclass
class LastRequest:
    method: str
    path: str
    headers: dict[str, str]
    body_size: int = 0
    model: str | None = None


@dataclass
class FakeEngineStats:
    requests: Counter[str] = field(default_factory=Counter)  # per path
    #: per prompt: the last user message (chat), ``prompt`` (completions, images, music,
    #: video, 3D) or ``input`` (speech, embeddings) of each request
    prompts: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0  # answers sent to the end
    aborted: int = 0  # the client disconnected before the answer was complete
    dropped: int = 0  # connections closed on purpose by a `break_after` fault
    faults_applied: int = 0
    image_inputs: int = 0  # video requests whose `image` was a decodable PNG or JPEG data URI / base64
    models: dict[str, ModelStats] = field(default_factory=dict)
    last_request: LastRequest | None = None

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def model(self, model_id: str) -> ModelStats:
        return self.models.setdefault(model_id, ModelStats())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["requests"] = dict(self.requests)
        data["prompts"] = dict(self.prompts)
        data["total_requests"] = self.total_requests
        return data


class FakeEngineState:
    """Everything one fake engine knows; share it between the app and the test."""

    def __init__(self, settings: FakeEngineSettings | None = None, faults: list[Fault] | None = None) -> None:
        self.settings = settings or FakeEngineSettings()
        self.faults: list[Fault] = list(faults or [])
        self.stats = FakeEngineStats()
        self.started_at = int(time.time())

    def add_fault(self, fault: Fault) -> Fault:
        fault.validate()
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def take_fault(self, path: str, model: str | None) -> Fault | None:
        """The first configured fault matching this request, using up one of its `times`."""
        for fault in self.faults:
            if not fault.matches(path, model):
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            return fault
        return None

    def reset_stats(self) -> None:
        self.stats = FakeEngineStats()

    def control_json(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "faults": [fault.to_json() for fault in self.faults],
        }

    def apply_control(self, data: dict[str, Any]) -> None:
        """`{"settings": {...partial}, "faults": [...] (replace), "add_faults": [...]}`."""
        unknown = set(data) - {"settings", "faults", "add_faults"}
        if unknown:
            raise ValueError(f"unknown control field(s): {', '.join(sorted(unknown))}")
        # Parse everything first so a bad request changes nothing.
        replace = [Fault.from_json(item) for item in data["faults"]] if "faults" in data else None
        extra = [Fault.from_json(item) for item in data.get("add_faults", [])]
        if "settings" in data:
            self.settings.update(data["settings"])
        if replace is not None:
            self.faults = replace
        self.faults.extend(extra)

    async def wait_until(self, predicate: Callable[[FakeEngineStats], bool], timeout: float = 5.0) -> None:
        """Poll the counters until `predicate` holds; TimeoutError with the stats otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate(self.stats):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s: {self.stats.to_json()}")
            await asyncio.sleep(0.01)
