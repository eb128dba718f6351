"""A direct agent's callback URL, parsed into parts so relay URLs are built, never appended.

Only ``scheme://host[:port][/base/path]`` is accepted: no query, fragment or userinfo
(they let a ``/relay/...`` suffix become a query or a fragment and aim the hub at any
path), no percent-escapes or dot segments in the path, no numeric host forms other than
dotted-quad IPv4 and bracketed IPv6 (``http://2130706433/`` is 127.0.0.1 to a resolver).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from inference_club.errors import InvalidRequest

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,=:@-]+$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refuse(reason: str) -> InvalidRequest:
    return InvalidRequest(f"callback_url {reason}", param="callback_url")


@dataclass(frozen=True, slots=True)
class CallbackUrl:
    scheme: str  # "http" or "https"
    host: str  # a lower-case DNS name, or an IP address without brackets
    port: int
    base_path: str  # "" or "/a/b" (no trailing slash)

    @property
    def ip(self) -> IPAddress | None:
        """The host as an address when it is a literal, else None (a name to resolve)."""
        return _literal_ip(self.host)

    @property
    def netloc(self) -> str:
        """``host[:port]`` as it goes into a URL and a ``Host`` header."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def relay_path(self, service_type: str, path: str) -> str:
        """The path the hub calls for ``path`` (``/v1/...``, no query) of ``service_type``."""
        return f"{self.base_path}/relay/{service_type}{path}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.base_path}"


@lru_cache(maxsize=4096)
def _literal_ip(host: str) -> IPAddress | None:
    # Asked on every call to a direct agent; parsing the address each time showed in profiles.
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def parse_callback_url(raw: str) -> CallbackUrl:
    """Parse and normalise; a clear 400 naming ``callback_url`` when it is not acceptable."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise _refuse("must not contain spaces or control characters")
    if not raw.isascii():
        raise _refuse("must be ASCII (write an international host name in its xn-- form)")
    if "\\" in raw:
        raise _refuse("must not contain backslashes")
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not raw.lower().startswith(f"{scheme}://"):
        raise _refuse("must be an http:// or https:// URL")
    if "?" in raw:
        raise _refuse("must not have a query string ('?')")
    if "#" in raw:
        raise _refuse("must not have a fragment ('#')")
    if "@" in parts.netloc:
        raise _refuse("must not contain a user name or password ('user@host')")
    try:
        port = parts.port
    except ValueError:
        raise _refuse("has an invalid port (1-65535)") from None
    if port == 0:
        raise _refuse("has an invalid port (1-65535)")
    host = _host(parts.netloc, parts.hostname or "")
    return CallbackUrl(scheme, host, port or _DEFAULT_PORTS[scheme], _base_path(parts.path))


def _host(netloc: str, hostname: str) -> str:
    if not hostname:
        raise _refuse("must name a host")
    if netloc.startswith("["):
        if "%" in hostname:
            raise _refuse("must not carry an IPv6 zone ('%')")
        try:
            return ipaddress.IPv6Address(hostname).compressed
        except ValueError:
            raise _refuse(f"has an invalid IPv6 address [{hostname}]") from None
    try:
        return ipaddress.IPv4Address(hostname).compressed
    except ValueError:
        pass
    if not _HOST_NAME.match(hostname):
        raise _refuse(f"has an invalid host name {hostname!r}")
    if _NUMERIC_LABEL.match(hostname.rstrip(".").rsplit(".", 1)[-1]):
        raise _refuse(f"host {hostname!r} looks numeric: write IPv4 addresses as four decimal numbers")
    return hostname


def _base_path(path: str) -> str:
    trimmed = path.rstrip("/")
    if not trimmed:
        return ""
    for segment in trimmed.split("/")[1:]:
        if segment in ("", ".", ".."):
            raise _refuse("path must not contain empty, '.' or '..' segments")
        if not _PATH_SEGMENT.match(segment):
            raise _refuse(f"path segment {segment!r} has characters that are not allowed (no '%' or ';')")
    return trimmed
