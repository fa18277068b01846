"""Percentiles, CDFs, time series and rates of loom_load.stats."""

from __future__ import annotations

import asyncio
import time

import pytest
from loom_load.ingest import LagTracker, like_prefix
from loom_load.stats import Latency, Timeline, rate, ratio, sustained_rate, thin


def test_percentiles_of_a_uniform_distribution_in_milliseconds() -> None:
    latency = Latency()
    latency.record_many(i / 1000 for i in range(1, 1001))  # 1 ms .. 1000 ms
    summary = latency.summary()
    assert summary["count"] == 1000
    assert summary["p50_ms"] == pytest.approx(500, rel=0.002)
    assert summary["p95_ms"] == pytest.approx(950, rel=0.002)
    assert summary["p99_ms"] == pytest.approx(990, rel=0.002)
    assert summary["max_ms"] == pytest.approx(1000, rel=0.002)
    assert summary["min_ms"] == pytest.approx(1, rel=0.002)
    assert summary["mean_ms"] == pytest.approx(500.5, rel=0.002)


def test_sub_millisecond_values_keep_microsecond_resolution() -> None:
    latency = Latency()
    latency.record(0.000250)
    assert latency.percentile_ms(50) == pytest.approx(0.25, abs=0.001)


def test_empty_histogram_reports_none_not_zero() -> None:
    summary = Latency().summary()
    assert summary["count"] == 0
    assert summary["p50_ms"] is None and summary["p99_ms"] is None and summary["max_ms"] is None
    assert Latency().cdf() == []


def test_negative_durations_are_clamped_and_counted() -> None:
    latency = Latency()
    latency.record(-0.002)
    latency.record(0.004)
    latency.record(float("nan"))
    summary = latency.summary()
    assert summary["count"] == 2
    assert summary["negative_clamped"] == 1
    assert summary["min_ms"] <= 0.001


def test_cdf_is_monotonic_and_ends_at_one() -> None:
    latency = Latency()
    latency.record_many([0.001] * 10 + [0.010] * 80 + [0.100] * 10)
    cdf = latency.cdf()
    assert cdf[-1][1] == pytest.approx(1.0)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(cdf, cdf[1:], strict=False))
    assert cdf[0][0] == pytest.approx(1.0, rel=0.002)
    assert cdf[0][1] == pytest.approx(0.1)


def test_merge_adds_counts() -> None:
    a, b = Latency(), Latency()
    a.record_many([0.001] * 3)
    b.record_many([0.002] * 5)
    a.merge(b)
    assert a.count == 8


def test_thin_keeps_first_and_last() -> None:
    points = [(float(i), float(i)) for i in range(1000)]
    thinned = thin(points, 50)
    assert len(thinned) == 50
    assert thinned[0] == points[0] and thinned[-1] == points[-1]
    assert thin(points[:10], 50) == points[:10]


def test_timeline_buckets_and_gaps() -> None:
    timeline = Timeline(start=100.0, bucket_s=0.5)
    for at in (100.1, 100.2, 100.3, 101.6):
        timeline.add(at)
    assert timeline.series() == [(0.5, 6.0), (1.0, 0.0), (1.5, 0.0), (2.0, 2.0)]
    assert timeline.peak_per_s() == 6.0
    assert Timeline(start=0.0).series() == []


def test_rate_and_ratio_refuse_to_divide_by_nothing() -> None:
    assert rate(100, 2.0) == 50.0
    assert rate(0, 2.0) is None and rate(10, 0) is None
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(None, 1.0) is None and ratio(1.0, None) is None and ratio(1.0, 0) is None


def test_sustained_rate_ignores_ramp_and_tail() -> None:
    # a slow start (0 -> 100 in 1 s), 1000 rows/s in the middle, a slow tail
    samples = [(0.0, 0), (1.0, 100), (1.5, 600), (2.0, 1100), (2.3, 1400), (5.0, 1500)]
    assert sustained_rate(samples, 1500) == pytest.approx(1000.0)
    assert sustained_rate([(0.0, 0)], 10) is None
    assert sustained_rate(samples, 0) is None
    assert sustained_rate([(0.0, 0), (1.0, 5)], 100) is None  # never reached 90 %


def test_ingest_lag_is_the_commit_time_when_every_row_has_one() -> None:
    tracker = LagTracker("postgresql://unused", {"id", "time"})
    for poll_s, commit_s in ((0.30, 0.05), (0.25, 0.08)):
        tracker.poll_lag.record(poll_s)
        tracker.commit_lag.record(commit_s)
    summary = tracker.summary()
    assert summary["lag_method"] == "commit time (exact)"
    assert summary["lag"]["max_ms"] < 100 < summary["poll_lag"]["min_ms"]

    tracker.by_phase["echo-nats-closed"] = (Latency(), Latency())
    tracker.by_phase["echo-nats-closed"][0].record(0.02)
    tracker.by_phase["echo-nats-closed"][1].record(0.3)
    assert tracker.summary()["by_phase"]["echo-nats-closed"]["max_ms"] < 100  # the same method, by phase

    tracker.poll_lag.record(0.4)  # a row committed before commit times were kept
    summary = tracker.summary()
    assert summary["lag_method"].startswith("polled every 100 ms")
    assert summary["lag"]["count"] == 3 and summary["lag"]["max_ms"] >= 400
    assert summary["by_phase"]["echo-nats-closed"]["max_ms"] >= 300


def test_the_lag_tracker_polls_seldom_with_commit_times_and_often_once_draining() -> None:
    async def waits() -> list[float]:
        tracker = LagTracker("postgresql://unused", {"id", "time"}, interval_s=0.01, exact_interval_s=0.5)
        took = []
        for commit_timestamps, draining in ((False, False), (True, False), (True, True)):
            tracker.commit_timestamps, tracker._draining = commit_timestamps, draining
            started = time.perf_counter()
            await tracker._next_poll()
            took.append(time.perf_counter() - started)
        return took

    without, exact, draining = asyncio.run(waits())
    assert exact >= 0.49 and without < 0.25 and draining < 0.25


def test_like_prefix_matches_the_prefix_literally() -> None:
    assert like_prefix("run_1-echo-") == "run\\_1-echo-%"
    assert like_prefix("a%b\\") == "a\\%b\\\\%"


def test_events_of_a_phase_read_from_the_table_are_not_also_counted_as_heard() -> None:
    tracker = LagTracker("postgresql://unused", {"id", "time", "kind"})
    tracker.read_after("echo-nats-closed", ["lt1-echo-nats-closed-"], 100.0, 200.0)
    tracker.add("e1", 150.0, "/loom/dispatcher", "echo-nats-closed")  # a straggler heard later
    tracker.add("e2", 150.0, "/loom/dispatcher", "echo-nats-seq")
    tracker.add("e3", 150.0, "/loom/dispatcher", None)
    assert tracker.heard == 2 and list(tracker._pending) == ["e2", "e3"]
    tracker.read_rows["echo-nats-closed"] = 3  # read at the drain: a later straggler still is not
    tracker.add("e4", 151.0, "/loom/dispatcher", "echo-nats-closed")
    assert tracker.heard == 2 and "e4" not in tracker._pending
