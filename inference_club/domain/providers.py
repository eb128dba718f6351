"""Provider, service and model capability types, and the hub's parsing of a heartbeat.

Pure data and validation; the registry keeps these in memory for routing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from inference_club.domain.endpoints import ServiceType
from inference_club.domain.heartbeat import HeartbeatBody as HeartbeatBody  # re-exported for the hub
from inference_club.domain.heartbeat import ModelDecl as ModelDecl
from inference_club.domain.heartbeat import ServiceDecl as ServiceDecl
from inference_club.errors import InvalidRequest

_DEFAULT_MODALITIES: dict[str, tuple[list[str], list[str]]] = {
    "llm": (["text"], ["text"]),
    "embedding": (["text"], ["embedding"]),
    "stt": (["audio"], ["text"]),
    "tts": (["text"], ["audio"]),
    "image": (["text", "image"], ["image"]),
    "music": (["text"], ["audio"]),
    "video": (["text", "image"], ["video"]),
    "mesh": (["text", "image"], ["mesh"]),
}


def parse_heartbeat(data: object) -> HeartbeatBody:
    try:
        return HeartbeatBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequest(f"{param}: {first['msg']}", param=param) from None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    context_length: int | None
    input_modalities: tuple[str, ...]
    output_modalities: tuple[str, ...]
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    index: int
    type: ServiceType
    engine: str
    max_concurrency: int
    models: dict[str, ModelInfo]

    @classmethod
    def from_decl(cls, index: int, decl: ServiceDecl) -> ServiceInfo:
        ins, outs = _DEFAULT_MODALITIES[decl.type.value]
        models = {
            m.id: ModelInfo(
                id=m.id,
                context_length=m.context_length,
                input_modalities=tuple(m.input_modalities or ins),
                output_modalities=tuple(m.output_modalities or outs),
                features=tuple(m.features),
            )
            for m in decl.models
        }
        return cls(index, decl.type, decl.engine, decl.max_concurrency, models)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "engine": self.engine,
            "max_concurrency": self.max_concurrency,
            "models": [
                {
                    "id": m.id,
                    "context_length": m.context_length,
                    "input_modalities": list(m.input_modalities),
                    "output_modalities": list(m.output_modalities),
                    "features": list(m.features),
                }
                for m in self.models.values()
            ],
        }


@dataclass(slots=True)
class ProviderState:
    """What routing needs to know of one provider, kept in memory."""

    id: str
    user_id: str
    name: str
    transport: str
    callback_url: str | None
    visibility: str
    agent_secret: str
    services: list[ServiceInfo]
    last_seen: float  # wall-clock seconds of the last heartbeat
    created: int
    version: str | None = None
    health: dict[str, Any] = field(default_factory=dict)
    tunnels: int = 0  # open tunnel connections (tunnel transport)
    # Open tunnels held by other replicas of a scaled-out hub: replica id → count.
    remote_tunnels: dict[str, int] = field(default_factory=dict)
    key_id: str | None = None  # the API key of the last heartbeat (in memory only)

    def is_online(self, now: float, window_s: float) -> bool:
        if self.transport == "tunnel":
            return self.tunnels > 0 or bool(self.remote_tunnels)
        return now - self.last_seen <= window_s

    def usable_by(self, user_id: str, preference: str) -> bool:
        if self.user_id == user_id:
            return True
        return self.visibility == "shared" and preference != "own"
