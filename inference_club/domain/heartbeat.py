"""The heartbeat an agent sends and the hub reads: one typed model for both sides.

The agent builds a :class:`HeartbeatBody` and sends :meth:`HeartbeatBody.to_wire`; the
hub validates the JSON it receives into the same model. Pure data: this module is one
of the few the agent imports from the hub's package.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inference_club.domain.service_types import ServiceType

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class ModelDecl(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Any UTF-8 text but control characters: ids travel in HTTP headers and log lines.
    id: str = Field(min_length=1, max_length=255, pattern=_PRINTABLE)
    context_length: int | None = Field(None, ge=0)
    input_modalities: list[str] | None = None
    output_modalities: list[str] | None = None
    features: list[str] = Field(default_factory=list)


class ServiceDecl(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: ServiceType
    engine: str = Field("openai", max_length=64)
    max_concurrency: int = Field(4, ge=1, le=10_000)
    models: list[ModelDecl] = Field(default_factory=list, max_length=5000)


class LegacyModel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=255, pattern=_PRINTABLE)
    context_window: int | None = Field(None, ge=0)


class HeartbeatBody(BaseModel):
    """What an agent tells the hub it is and serves (docs/agent-protocol.md, Heartbeat)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=150, pattern=r"^[A-Za-z0-9_.:@-]+$")
    transport: str = Field("direct", pattern="^(direct|tunnel)$")
    callback_url: str | None = Field(None, max_length=2048)
    version: str | None = Field(None, max_length=64)
    services: list[ServiceDecl] | None = Field(None, max_length=64)
    models: list[LegacyModel] | None = Field(None, max_length=5000)  # legacy form
    health: dict[str, Any] = Field(default_factory=dict)
    visibility: str | None = Field(None, pattern="^(private|shared)$")

    def normalized_services(self) -> list[ServiceDecl]:
        if self.services is not None:
            return self.services
        legacy = self.models or []
        return [
            ServiceDecl(
                type=ServiceType.LLM,
                models=[ModelDecl(id=m.name, context_length=m.context_window) for m in legacy],
            )
        ]

    def to_wire(self) -> dict[str, Any]:
        """The JSON body as sent: only the fields the sender set, so unknown facts stay unsaid."""
        return self.model_dump(mode="json", exclude_unset=True)
