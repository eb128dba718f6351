"""The shared answer shapes: a cursor page and the 202 of a new job, batch or run."""

from __future__ import annotations

import orjson

from inference_club.surfaces.http.envelopes import accepted, page


def rows(*ids: str) -> list[dict[str, str]]:
    return [{"id": i} for i in ids]


def test_a_page_fetched_with_one_extra_row_has_more_and_drops_the_extra() -> None:
    assert page(rows("c", "b", "a"), 2) == {
        "object": "list",
        "data": rows("c", "b"),
        "has_more": True,
        "first_id": "c",
        "last_id": "b",
    }


def test_a_page_of_exactly_limit_rows_is_the_last_one() -> None:
    result = page(rows("b", "a"), 2)
    assert result["has_more"] is False and result["data"] == rows("b", "a")
    assert (result["first_id"], result["last_id"]) == ("b", "a")


def test_an_empty_page_has_no_ids() -> None:
    assert page([], 50) == {
        "object": "list",
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }


def test_accepted_is_202_with_location_and_says_replayed_only_on_a_replay() -> None:
    fresh = accepted({"id": "job_1"}, "/v1/jobs/job_1", replayed=False)
    assert fresh.status_code == 202 and orjson.loads(fresh.body) == {"id": "job_1"}
    assert fresh.headers["location"] == "/v1/jobs/job_1"
    assert "idempotent-replayed" not in fresh.headers
    replay = accepted({"id": "job_1"}, "/v1/jobs/job_1", replayed=True)
    assert replay.headers["idempotent-replayed"] == "true"
