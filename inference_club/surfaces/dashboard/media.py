"""How the dashboard shows a stored file: which player, and a signed link to its bytes.

Files are only ever shown through ``<img>``, ``<audio>`` and ``<video>`` (or offered as
a download), from the files route with a signed, expiring link; never as a page.
"""

from __future__ import annotations

from inference_club.services.container import Hub

#: Dashboard pages are short-lived; their media links last an hour.
LINK_TTL_S = 3600


def media_kind(content_type: str) -> str:
    """``image``, ``audio``, ``video`` (playable inline) or ``download``."""
    main = content_type.split(";")[0].strip().lower()
    if main in ("image/png", "image/jpeg", "image/webp", "image/gif"):
        return "image"
    if main.startswith("audio/"):
        return "audio"
    if main.startswith("video/"):
        return "video"
    return "download"


def signed_url(hub: Hub, file_id: str) -> str:
    return hub.files.signer.url(f"/v1/files/{file_id}/content", file_id, ttl_s=LINK_TTL_S)
