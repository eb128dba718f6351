"""Bytes that crossed one side's tunnel connections, counted as frames go by (for metrics)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ByteCount:
    """Two running totals; the link adds to them inline, the metrics scrape reads them."""

    received: int = 0
    sent: int = 0
