"""Key revocations and user changes told to every replica at once.

A replica that revokes a key, or disables or enables a user, publishes it on
``ic:revocations``; every other replica then does what the revoking one did: drops the
key from its authentication cache and closes its tunnels (a user change drops every
cached key and re-checks the live connections). The CLI, in a process of its own,
publishes the same message. The key watch's polling stays as the fallback for a message
missed while Redis was down, and each re-established subscription triggers one check.
"""

from __future__ import annotations

from typing import Any

import orjson

from inference_club.cluster.broadcast import Broadcast
from inference_club.cluster.redis_link import RedisLink
from inference_club.errors import SharedStateUnavailable
from inference_club.services.revocation import KeyWatch, Subject

CHANNEL = "ic:revocations"


def message(subject: Subject, ident: str) -> dict[str, Any]:
    return {"subject": subject, "id": ident}


class RevocationFanout:
    def __init__(self, broadcast: Broadcast, key_watch: KeyWatch) -> None:
        self._broadcast = broadcast
        self._key_watch = key_watch
        key_watch.on_announce(self._announce)
        broadcast.on(CHANNEL, self._received)
        broadcast.on_connected(key_watch.forget_all)

    def __repr__(self) -> str:
        return f"<RevocationFanout {self._broadcast!r}>"

    def _announce(self, subject: Subject, ident: str) -> None:
        self._broadcast.publish(CHANNEL, message(subject, ident))

    def _received(self, body: dict[str, Any]) -> None:
        ident = body.get("id")
        if not isinstance(ident, str):
            return
        if body.get("subject") == "key":
            self._key_watch.revoke(ident)
        elif body.get("subject") == "user":
            self._key_watch.forget_all()


async def announce(redis_url: str, subject: Subject, ident: str) -> bool:
    """Tell the running replicas from another process (the CLI); False when Redis is unreachable."""
    link = RedisLink(redis_url)
    try:
        async with link.call() as r:
            await r.publish(CHANNEL, orjson.dumps({**message(subject, ident), "origin": "cli"}))
        return True
    except SharedStateUnavailable:
        return False
    finally:
        await link.aclose()
