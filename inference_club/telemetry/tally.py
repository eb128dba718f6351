"""Counters and histograms kept as plain numbers, turned into Prometheus families at scrape time.

Counting happens on the request path, so it is a dict update and a bisect, with no
lock: hub and agent count and scrape on one event loop thread. The scrape reads these
numbers through a collector registered on the app's own ``CollectorRegistry``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class Tally:
    """A counter with labels: ``add(("a", "b"))`` counts one more for that label set."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def add(self, key: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, key: tuple[str, ...]) -> float:
        return self.values.get(key, 0.0)

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(list(key), value)
        return family


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class Buckets:
    """A histogram with labels: ``observe(key, seconds)``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        bounds: Sequence[float] = LATENCY_BUCKETS_S,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.bounds = tuple(bounds)
        self.series: dict[tuple[str, ...], _Series] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series(len(self.bounds) + 1)
        series.counts[bisect_left(self.bounds, value)] += 1
        series.total += value

    def count(self, key: tuple[str, ...]) -> int:
        series = self.series.get(key)
        return sum(series.counts) if series else 0

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, series in self.series.items():
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*self.bounds, float("inf")), series.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(key), buckets, series.total)
        return family


class FamiliesCollector:
    """A registry collector over a callable that yields metric families when scraped."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()


def in_out_counters(
    prefix: str, seen_by: str, totals: Iterable[tuple[str, str, int, int]]
) -> Iterator[Metric]:
    """A counter family ``<prefix>_<suffix>`` per ``(suffix, what, in, out)``, labelled ``direction``."""
    for suffix, what, received, sent in totals:
        family = CounterMetricFamily(f"{prefix}_{suffix}", f"{what} {seen_by}.", labels=["direction"])
        family.add_metric(["in"], received)
        family.add_metric(["out"], sent)
        yield family
