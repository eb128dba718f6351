"""Open-file limit: every connection is a file descriptor.

A hub holding thousands of event streams, or an agent relaying a thousand streams to
its engine, runs out of descriptors under the common soft limit of 1,024 long before it
runs out of memory. The soft limit may be raised up to the hard limit without
privileges, so the hub and the agent do that at start.
"""

from __future__ import annotations

import contextlib


def raise_open_file_limit() -> int | None:
    """Raise this process's soft limit on open files to its hard limit; the new soft limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows has no such limit
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft
    # An unlimited hard limit is capped: some kernels refuse RLIM_INFINITY for files.
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
