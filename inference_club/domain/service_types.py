"""The kinds of service a provider offers; small enough for the agent to import."""

from __future__ import annotations

from enum import StrEnum


class ServiceType(StrEnum):
    LLM = "llm"
    EMBEDDING = "embedding"
    STT = "stt"
    TTS = "tts"
    IMAGE = "image"
    MUSIC = "music"
    VIDEO = "video"
    MESH = "mesh"
