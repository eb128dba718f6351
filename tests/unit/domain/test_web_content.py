"""User content on the hub's origin: passive media inline, everything else a sandboxed download."""

from __future__ import annotations

import pytest

from inference_club.domain.web_content import (
    MAX_FILENAME_CHARS,
    USER_CONTENT_CSP,
    clean_filename,
    content_disposition,
    served_content_type,
    user_content_headers,
)


@pytest.mark.parametrize(
    ("declared", "served", "inline"),
    [
        ("image/png", "image/png", True),
        ("IMAGE/JPEG; q=1", "image/jpeg", True),
        ("audio/wav", "audio/wav", True),
        ("video/mp4", "video/mp4", True),
        ("text/plain", "text/plain; charset=utf-8", True),
        ("text/html", "application/octet-stream", False),
        ("image/svg+xml", "application/octet-stream", False),
        ("application/javascript", "application/octet-stream", False),
        ("application/pdf", "application/pdf", False),
        ("model/gltf-binary", "model/gltf-binary", False),
        ("not a type", "application/octet-stream", False),
        (None, "application/octet-stream", False),
    ],
)
def test_only_passive_media_is_shown_inline(declared: str | None, served: str, inline: bool) -> None:
    headers = user_content_headers(declared, "file.bin")
    assert headers["content-type"] == served == served_content_type(declared)
    assert headers["content-disposition"].startswith("inline;" if inline else "attachment;")
    assert headers["content-security-policy"] == USER_CONTENT_CSP and "sandbox" in USER_CONTENT_CSP
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.png", "photo.png"),
        ("a\x00b\r\nc.txt", "abc.txt"),
        ("..", None),
        ("", None),
        (None, None),
        ("x" * 300, "x" * MAX_FILENAME_CHARS),
    ],
)
def test_stored_filenames_are_one_printable_component(name: str | None, cleaned: str | None) -> None:
    assert clean_filename(name) == cleaned


def test_a_filename_cannot_inject_header_parameters() -> None:
    header = content_disposition('évil"; filename="x.html\r\n.png', inline=False)
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert '"' not in fallback and ";" not in fallback and "\r" not in header and "\n" not in header
    assert header.startswith("attachment; ") and "filename*=UTF-8''%C3%A9vil%22" in header
    assert content_disposition(".hidden", inline=True).startswith('inline; filename="download.hidden"')
