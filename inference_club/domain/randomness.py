"""Random bytes from the kernel, fetched a block at a time.

``os.urandom`` is one system call per draw, and the hub draws for every request it
serves (its request id). Ids take their bytes from a block of :data:`BLOCK` bytes of the
same source instead: the kernel's cryptographic generator, only read ahead. A forked
child drops its parent's block, so the two never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

BLOCK = 4096


class RandomBlock:
    def __init__(self, size: int = BLOCK) -> None:
        self._size = size
        self._lock = threading.Lock()  # ids are minted from worker threads too
        self._block = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        """``n`` fresh random bytes, never handed out before."""
        if n > self._size:
            return os.urandom(n)
        with self._lock:
            at = self._at
            if at + n > len(self._block):
                self._block, at = os.urandom(self._size), 0
            self._at = at + n
            return self._block[at : at + n]


_shared = RandomBlock()


def _fresh_in_child() -> None:
    # A new block and a new lock: the parent's lock may have been held by another thread.
    global _shared
    _shared = RandomBlock()


os.register_at_fork(after_in_child=_fresh_in_child)


def random_bytes(n: int) -> bytes:
    return _shared.take(n)


def random_hex(n: int) -> str:
    """``2 * n`` hex characters from ``n`` random bytes."""
    return _shared.take(n).hex()
