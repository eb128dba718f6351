"""Native engine adapters, one module per engine, behind :class:`base.Adapter`.

``engine = "<name>"`` on a service selects one; the OpenAI-compatible engines
(``openai``, ``ollama``, ``llamacpp``, ``vllm``, ``lmstudio``) need none: the relay
passes their requests through (``agent/engines.py``).
"""

from __future__ import annotations

from ..config import ServiceConfig
from .a1111 import A1111Adapter
from .acestep import AceStepAdapter
from .base import Adapter, AdapterConfigError
from .comfyui import ComfyUIAdapter
from .dia import DiaAdapter
from .mesh import Hunyuan3DAdapter, TrellisAdapter
from .whispercpp import WhisperCppAdapter

__all__ = ["NATIVE_ADAPTERS", "PASS_THROUGH_ENGINES", "Adapter", "AdapterConfigError", "adapter_for"]

PASS_THROUGH_ENGINES: tuple[str, ...] = ("openai", "ollama", "llamacpp", "vllm", "lmstudio")

NATIVE_ADAPTERS: dict[str, type[Adapter]] = {
    "comfyui": ComfyUIAdapter,
    "a1111": A1111Adapter,
    "acestep": AceStepAdapter,
    "whispercpp": WhisperCppAdapter,
    "dia": DiaAdapter,
    "hunyuan3d": Hunyuan3DAdapter,
    "trellis": TrellisAdapter,
}


def adapter_for(service: ServiceConfig) -> Adapter | None:
    """The native adapter of a service, None for a pass-through engine.

    Raises :class:`AdapterConfigError` for an unknown engine, a service type the
    engine does not serve, or a configuration the adapter cannot work with.
    """
    if service.engine in PASS_THROUGH_ENGINES:
        return None
    cls = NATIVE_ADAPTERS.get(service.engine)
    if cls is None:
        known = ", ".join((*PASS_THROUGH_ENGINES, *NATIVE_ADAPTERS))
        raise AdapterConfigError(f"unknown engine {service.engine!r} (known: {known})")
    if service.type not in cls.service_types:
        raise AdapterConfigError(
            f"the {service.engine} engine serves type {' or '.join(cls.service_types)}, not {service.type!r}"
        )
    adapter = cls(service)
    adapter.check()
    return adapter
