"""Header names that describe one HTTP connection rather than the message it carries.

A proxy never forwards these (RFC 9110 §7.6.1); the hub's transports and the agent's
relay read the one set here. The agent imports this module from the hub's package.
"""

from __future__ import annotations

HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Lower-case names; a ``Connection`` header may name more, which are dropped as well."""

ANSWER_HEADERS_NOT_RELAYED = HOP_BY_HOP_HEADERS | {"content-length", "content-encoding", "date", "server"}
"""What the hub leaves out of an engine's answer: hop-by-hop headers, plus those its own
server writes for the body it actually sends (length, encoding, date, server name)."""
