"""The [S1]/[S2] dialogue script rules of /v1/voice/generations."""

from __future__ import annotations

import pytest

from inference_club.domain.dialogue import turns
from inference_club.domain.endpoints import BY_NAME
from inference_club.errors import InvalidScript


def test_a_good_script_splits_into_turns() -> None:
    assert turns("  [S1] Hi there. (laughs) [S2] Hello!\n[S1] Bye.") == [
        ("S1", "Hi there. (laughs)"),
        ("S2", "Hello!"),
        ("S1", "Bye."),
    ]


@pytest.mark.parametrize(
    ("script", "fragment"),
    [
        ("", "empty"),
        ("Hello [S1] hi", "start with a speaker tag"),
        ("[S2] Hi", "must start with '[S1]'"),
        ("[S1] Hi [S3] Yo", "unknown speaker tag '[S3]'"),
        ("[S1] Hi [s2] Yo", "unknown speaker tag '[s2]'"),
        ("[S1] Hi [S1] Again", "twice in a row"),
        ("[S1] [S2] Yo", "Turn 1 ([S1]) has no text"),
    ],
)
def test_bad_scripts_are_invalid_script(script: str, fragment: str) -> None:
    with pytest.raises(InvalidScript) as info:
        turns(script)
    assert fragment in info.value.message and info.value.param == "input"
    assert info.value.type == "invalid_script" and info.value.status == 400


def test_the_voice_endpoint_checks_the_script() -> None:
    with pytest.raises(InvalidScript):
        BY_NAME["voice.generations"].validate({"model": "dia", "input": "[S2] wrong start"})
    assert BY_NAME["voice.generations"].validate({"model": "dia", "input": "[S1] fine"}) == "dia"
