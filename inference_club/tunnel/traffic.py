"""What crossed one side's tunnel connections, counted as it goes by (for metrics).

Bytes and WebSocket messages are counted by the link, frames by the multiplexer; on a
batching tunnel (protocol 3) frames per message shows how much batching saves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Traffic:
    """Running totals; the link and the mux add to them inline, the metrics scrape reads them."""

    received: int = 0
    """Bytes received (frame headers included)."""
    sent: int = 0
    """Bytes sent."""
    messages_received: int = 0
    messages_sent: int = 0
    frames_received: int = 0
    frames_sent: int = 0

    def counting(self, receiver: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """``receiver``, with each message it is handed counted first (a link's delivery)."""

        def counted(data: bytes) -> None:
            self.received += len(data)
            self.messages_received += 1
            receiver(data)

        return counted

    def families(self) -> tuple[tuple[str, str, int, int], ...]:
        """``(name suffix, what it counts, in, out)`` for each total, as metrics name them."""
        return (
            ("bytes", "WebSocket bytes (frame headers included)", self.received, self.sent),
            ("messages", "WebSocket messages", self.messages_received, self.messages_sent),
            (
                "frames",
                "Tunnel frames (several per message on a batching tunnel)",
                self.frames_received,
                self.frames_sent,
            ),
        )
