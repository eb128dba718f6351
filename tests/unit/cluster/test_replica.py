"""A replica's name: the configured one, else one made from the host name that differs per start."""

from __future__ import annotations

import os
import re
import socket

import pytest

from inference_club.cluster.replica import make_replica_id


def test_a_configured_id_is_used_as_is() -> None:
    assert make_replica_id("hub-a") == "hub-a"


@pytest.mark.parametrize("configured", [None, ""])
def test_without_one_the_id_is_host_pid_and_a_fresh_suffix(configured: str | None) -> None:
    first, second = make_replica_id(configured), make_replica_id(configured)
    assert re.fullmatch(rf"[A-Za-z0-9_.-]+-{os.getpid()}-[0-9a-f]{{4}}", first)
    assert first != second or make_replica_id(configured) != first  # 4 random hex digits


def test_the_host_name_is_cut_and_made_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "rack 7/gpu:box" + "x" * 60)
    made = make_replica_id(None)
    host = made.rsplit("-", 2)[0]
    assert host == ("rack-7-gpu-box" + "x" * 60)[:40]


def test_an_empty_host_name_becomes_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert make_replica_id(None).startswith(f"hub-{os.getpid()}-")
