"""The cyclic garbage collector of a long-running server process (the hub's, an agent's).

A full collection walks every object the collector tracks. A server holds hundreds of
thousands of them from its start (modules, the app, its schemas) that never become
garbage, and walked them all again every few thousand requests. :func:`settle_heap` runs
once, when startup is done: it moves what exists into the generation the collector never
walks, and lets the youngest generation grow larger between collections; cyclic garbage
is rare on the hot path (a cancelled request leaves a few frames behind).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Allocations (net) of tracked objects between two collections of the youngest generation (Python's default: 700)."""


def settle_heap() -> None:
    """Freeze what startup built and collect the young less often. Process-wide: call it
    from a server's entry point, never from code a test runs in its own process."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)
