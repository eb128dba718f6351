"""inference-club: a self-hostable, OpenAI-compatible inference hub."""

__version__ = "0.1.0"
