"""How user content (uploads, engine-made media) is served so a browser never runs it.

Everything a member uploads or an engine declares is untrusted and lives on the hub's
origin, next to pages that hold API keys. Only a short allow-list of passive media is
shown inline; everything else (HTML, SVG, XML, scripts, PDF, unknown types) is a
download, and every such answer carries a sandboxing Content-Security-Policy.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

# Passive media a browser shows without running anything: images except SVG, audio, video.
_INLINE_EXACT = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "text/plain",
    }
)
_INLINE_PREFIXES = ("audio/", "video/")

# Download-only types whose name is still useful to the downloader; nothing here runs as
# script or stylesheet under nosniff. Any other type is served as application/octet-stream.
_DOWNLOAD_KEEP = frozenset(
    {
        "application/octet-stream",
        "application/pdf",
        "application/json",
        "application/jsonl",
        "application/x-ndjson",
        "application/zip",
        "application/gzip",
        "application/x-tar",
        "text/csv",
        "model/gltf-binary",
        "model/gltf+json",
        "model/obj",
        "model/stl",
    }
)

_TOKEN = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
_MEDIA_TYPE = re.compile(rf"^({_TOKEN})/({_TOKEN})$")

# The sandbox directive gives a rendered document an opaque origin with no scripts, so it
# can neither read the hub's storage nor act on its behalf. Media documents still load.
USER_CONTENT_CSP = (
    "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'"
)

_FALLBACK_UNSAFE = re.compile(r"[^A-Za-z0-9 !#$&+,.=@^_`{}~()\[\]-]")
MAX_FILENAME_CHARS = 255


def media_type(content_type: str | None) -> str:
    """The bare, lower-cased ``type/subtype`` of a Content-Type, or octet-stream if malformed."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    return base if _MEDIA_TYPE.match(base) else "application/octet-stream"


def is_inline(content_type: str | None) -> bool:
    base = media_type(content_type)
    return base in _INLINE_EXACT or base.startswith(_INLINE_PREFIXES)


def served_content_type(content_type: str | None) -> str:
    """The Content-Type to answer with: parameters dropped, active types neutralised."""
    base = media_type(content_type)
    if base == "text/plain":
        return "text/plain; charset=utf-8"
    if is_inline(base) or base in _DOWNLOAD_KEEP:
        return base
    return "application/octet-stream"


def clean_filename(name: str | None) -> str | None:
    """A stored filename: last path component, no control characters, at most 255 characters."""
    if not name:
        return None
    last = re.split(r"[/\\]", name)[-1]
    printable = "".join(ch for ch in last if unicodedata.category(ch)[0] != "C").strip()
    if printable in ("", ".", ".."):
        return None
    return printable[:MAX_FILENAME_CHARS]


def content_disposition(filename: str, *, inline: bool) -> str:
    """RFC 6266 with an ASCII fallback and the exact name in RFC 5987 ``filename*``.

    The fallback keeps only characters that cannot end the quoted string or start a new
    parameter, so a name with ``"``, ``;`` or CR/LF cannot inject header parameters.
    """
    name = clean_filename(filename) or "download"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    fallback = _FALLBACK_UNSAFE.sub("_", ascii_name).strip()
    if not fallback or fallback.startswith("."):
        fallback = "download" + fallback
    encoded = quote(name, safe="!#$&+-.^_`|~")
    disposition = "inline" if inline else "attachment"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def user_content_headers(content_type: str | None, filename: str) -> dict[str, str]:
    """Headers that make user content safe to serve from the hub's origin."""
    return {
        "content-type": served_content_type(content_type),
        "content-disposition": content_disposition(filename, inline=is_inline(content_type)),
        "content-security-policy": USER_CONTENT_CSP,
        "x-content-type-options": "nosniff",
    }
