"""This process's name among the replicas of a scaled-out hub."""

from __future__ import annotations

import os
import secrets
import socket


def make_replica_id(configured: str | None) -> str:
    """``IC_REPLICA_ID`` when set, else ``<hostname>-<pid>-<4 hex>`` (new at every start)."""
    if configured:
        return configured
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname()[:40]) or "hub"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"
