"""Plain counters and histograms, read back through prometheus-client's text format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inference_club.telemetry.tally import Buckets, FamiliesCollector, Tally, in_out_counters


def scrape(*families: Tally | Buckets) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(FamiliesCollector(lambda: [f.family() for f in families]))
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_a_tally_counts_per_label_set() -> None:
    requests = Tally("ic_things", "Things.", ["kind", "status"])
    requests.add(("a", "200"))
    requests.add(("a", "200"))
    requests.add(("b", "500"), 3)
    samples = scrape(requests)
    assert samples[("ic_things_total", (("kind", "a"), ("status", "200")))] == 2
    assert samples[("ic_things_total", (("kind", "b"), ("status", "500")))] == 3
    assert requests.get(("c", "200")) == 0


def test_a_tally_without_labels() -> None:
    sent = Tally("ic_bytes", "Bytes.", [])
    sent.add((), 10)
    sent.add((), 5)
    assert scrape(sent)[("ic_bytes_total", ())] == 15


def test_buckets_are_cumulative_with_sum_and_count() -> None:
    latency = Buckets("ic_wait_seconds", "Waits.", ["route"], bounds=(0.1, 1.0, 10.0))
    for seconds in (0.05, 0.1, 0.5, 2.0, 50.0):
        latency.observe(("/x",), seconds)
    samples = scrape(latency)
    route = ("route", "/x")

    def bucket(le: str) -> float:
        return samples[("ic_wait_seconds_bucket", tuple(sorted((route, ("le", le)))))]

    assert [bucket("0.1"), bucket("1.0"), bucket("10.0"), bucket("+Inf")] == [2, 3, 4, 5]
    assert samples[("ic_wait_seconds_count", (route,))] == 5
    assert samples[("ic_wait_seconds_sum", (route,))] == 52.65
    assert latency.count(("/x",)) == 5
    assert latency.count(("/y",)) == 0


def test_in_out_counters_name_each_total_and_label_its_direction() -> None:
    families = list(
        in_out_counters("ic_x", "seen here", [("bytes", "Bytes", 10, 20), ("frames", "Frames", 1, 2)])
    )
    assert [f.name for f in families] == ["ic_x_bytes", "ic_x_frames"]
    assert families[0].documentation == "Bytes seen here."
    assert [(s.labels, s.value) for s in families[1].samples] == [
        ({"direction": "in"}, 1),
        ({"direction": "out"}, 2),
    ]
