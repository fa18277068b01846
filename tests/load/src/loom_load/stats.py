"""Latency histograms (HDR), throughput time series and the small arithmetic around them.

Everything here is pure: values go in, numbers come out. Latencies are recorded in
microseconds in an :class:`~hdrh.histogram.HdrHistogram` (1 µs .. 1 h, 3 significant digits)
and reported in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour
_DIGITS = 3

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


class Latency:
    """An HDR histogram of durations, fed in seconds, summarised in milliseconds."""

    def __init__(self) -> None:
        self._hist = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self.negative = 0  # durations below zero (clock skew between processes): clamped to 0

    def record(self, seconds: float) -> None:
        if seconds != seconds:  # NaN
            return
        if seconds < 0:
            self.negative += 1
            seconds = 0.0
        us = min(max(int(round(seconds * 1e6)), _LOWEST_US), _HIGHEST_US)
        self._hist.record_value(us)

    def record_many(self, values: Iterable[float]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: Latency) -> None:
        self._hist.add(other._hist)
        self.negative += other.negative

    @property
    def count(self) -> int:
        return int(self._hist.get_total_count())

    def percentile_ms(self, p: float) -> float | None:
        if self.count == 0:
            return None
        return float(self._hist.get_value_at_percentile(p)) / 1000.0

    def summary(self) -> dict[str, Any]:
        """count, mean, min, p50 .. p99.9 and max, in milliseconds (None when empty)."""
        if self.count == 0:
            return {"count": 0, "mean_ms": None, "min_ms": None, "max_ms": None} | {
                _pkey(p): None for p in PERCENTILES
            }
        out: dict[str, Any] = {
            "count": self.count,
            "mean_ms": round(self._hist.get_mean_value() / 1000.0, 3),
            "min_ms": round(self._hist.get_min_value() / 1000.0, 3),
            "max_ms": round(self._hist.get_max_value() / 1000.0, 3),
        }
        for p in PERCENTILES:
            out[_pkey(p)] = round(self._hist.get_value_at_percentile(p) / 1000.0, 3)
        if self.negative:
            out["negative_clamped"] = self.negative
        return out

    def cdf(self, max_points: int = 200) -> list[tuple[float, float]]:
        """(latency ms, fraction of values ≤ it) at every recorded value, thinned to ``max_points``."""
        total = self.count
        if total == 0:
            return []
        points: list[tuple[float, float]] = []
        for item in self._hist.get_recorded_iterator():
            value_ms = self._hist.get_highest_equivalent_value(item.value_iterated_to) / 1000.0
            points.append((value_ms, item.total_count_to_this_value / total))
        return thin(points, max_points)


def _pkey(p: float) -> str:
    text = f"{p:g}".replace(".", "_")
    return f"p{text}_ms"


def thin(points: Sequence[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """Keep at most ``max_points`` of ``points``, always including the first and the last."""
    if len(points) <= max_points or max_points < 2:
        return list(points)
    step = (len(points) - 1) / (max_points - 1)
    picked = [points[round(i * step)] for i in range(max_points)]
    picked[-1] = points[-1]
    return picked


def rate(count: int, seconds: float) -> float | None:
    """count / seconds, or None when there is no time span to divide by."""
    if seconds <= 0 or count <= 0:
        return None
    return count / seconds


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass
class Timeline:
    """Counts of happenings in fixed-width buckets since ``start`` (a monotonic clock reading)."""

    start: float
    bucket_s: float = 0.5
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, at: float, n: int = 1) -> None:
        index = max(0, math.floor((at - self.start) / self.bucket_s))
        self.counts[index] = self.counts.get(index, 0) + n

    def series(self) -> list[tuple[float, float]]:
        """(seconds since start at the bucket's end, events per second in the bucket), gaps as 0."""
        if not self.counts:
            return []
        last = max(self.counts)
        return [((i + 1) * self.bucket_s, self.counts.get(i, 0) / self.bucket_s) for i in range(last + 1)]

    def peak_per_s(self) -> float | None:
        series = self.series()
        return max(v for _, v in series) if series else None


def sustained_rate(
    samples: Sequence[tuple[float, int]], total: int, lo: float = 0.1, hi: float = 0.9
) -> float | None:
    """Rows per second between the moments ``lo`` and ``hi`` of ``total`` were reached.

    ``samples`` are (time s, cumulative count) readings in time order (polls of a table). The
    slope between the first reading at or above ``lo * total`` and the first at or above
    ``hi * total`` excludes the ramp-up and the tail, which a poll interval would distort.
    """
    if total <= 0 or len(samples) < 2:
        return None
    t_lo = next(((t, c) for t, c in samples if c >= lo * total), None)
    t_hi = next(((t, c) for t, c in samples if c >= hi * total), None)
    if t_lo is None or t_hi is None or t_hi[0] <= t_lo[0]:
        return None
    return (t_hi[1] - t_lo[1]) / (t_hi[0] - t_lo[0])
