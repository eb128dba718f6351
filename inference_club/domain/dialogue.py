"""The dialogue script rules of ``/v1/voice/generations`` (Dia-style ``[S1]``/``[S2]``).

A script is a sequence of turns, each a speaker tag followed by text:
``[S1] Hello there. [S2] Hi! (laughs) [S1] How are you?``. Rules:

- it starts with ``[S1]`` (after optional white space);
- the only tags are ``[S1]`` and ``[S2]`` (``[S3]``, ``[s1]``, ``[S 1]`` are refused);
- speakers alternate: the same tag twice in a row is refused;
- every turn has text.

Non-verbal cues in parentheses (``(laughs)``) are text. Breaking a rule is a 400
``invalid_script`` naming the turn, raised before any engine is asked.
"""

from __future__ import annotations

import re

from inference_club.errors import InvalidScript

__all__ = ["check_script", "turns"]

_TAG = re.compile(r"\[([^\[\]]{0,16})\]")
SPEAKERS = ("S1", "S2")


def turns(script: str) -> list[tuple[str, str]]:
    """``[(speaker, text), ...]``; raises InvalidScript when a rule is broken."""
    text = script.strip()
    if not text:
        raise InvalidScript("The script is empty; write turns like '[S1] Hello. [S2] Hi!'.", param="input")
    matches = list(_TAG.finditer(text))
    if not matches or matches[0].start() != 0:
        raise InvalidScript("The script must start with a speaker tag, '[S1]'.", param="input")
    out: list[tuple[str, str]] = []
    for index, match in enumerate(matches):
        tag = match.group(1)
        if tag not in SPEAKERS:
            raise InvalidScript(
                f"Turn {index + 1}: unknown speaker tag '[{tag}]'; only [S1] and [S2] are allowed.",
                param="input",
            )
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        said = text[match.end() : end].strip()
        if not said:
            raise InvalidScript(f"Turn {index + 1} ([{tag}]) has no text.", param="input")
        if out and out[-1][0] == tag:
            raise InvalidScript(
                f"Turn {index + 1}: [{tag}] speaks twice in a row; alternate [S1] and [S2].", param="input"
            )
        out.append((tag, said))
    if out[0][0] != "S1":
        raise InvalidScript("The script must start with '[S1]'.", param="input")
    return out


def check_script(script: str) -> None:
    turns(script)
