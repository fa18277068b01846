"""Figures, ratios and the written reports (loom_load.report), on a synthetic run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from loom_load.report import figures, render_html, rich_table, svg_chart, write_reports
from rich.console import Console


def _phase(name: str, throughput: float, p50: float, p99: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "mode": extra.pop("mode", "closed"),
        "concurrency": 64,
        "throughput": throughput,
        "submit_rate": throughput,
        "latency": {"count": 10, "p50_ms": p50, "p95_ms": p99, "p99_ms": p99, "max_ms": p99},
        "cdf": [(p50, 0.5), (p99, 1.0)],
        "timeline": [(0.5, throughput), (1.0, throughput)],
        "hops": {"submit→submitted": {"count": 10, "p50_ms": 1.0, "p99_ms": 2.0}},
        "accounting": {
            "completed": 10,
            "failed": 0,
            "dead": 0,
            "cancelled": 0,
            "rejected": 0,
            "missing": 0,
            "total": 10,
        },
        **extra,
    }


def _results(**overrides: Any) -> dict[str, Any]:
    results: dict[str, Any] = {
        "run": {"id": "abc", "profile": "short", "started_at": "now", "duration_s": 1.0},
        "phases": [
            _phase("echo-nats-closed", 1800.0, 30.0, 60.0),
            _phase("echo-rest-seq", 400.0, 2.0, 4.0, mode="sequential"),
            _phase("echo-nats-seq", 500.0, 1.5, 3.0, mode="sequential"),
        ],
        "celery": {
            "closed": {
                "throughput": 600.0,
                "concurrency": 64,
                "latency": {"p50_ms": 90.0},
                "cdf": [(90.0, 1.0)],
            },
            "sequential": {"latency": {"p50_ms": 2.5, "p99_ms": 4.0}},
        },
        "ceilings": {
            "nats": {"publish_async": {"rate": 47000.0}, "fetch_ack": {"rate": 27000.0}},
            "copy": {"rate": 100000.0},
        },
        "ingest": {
            "lag": {"lag": {"p50_ms": 40.0, "p99_ms": 90.0}},
            "burst": {"events": 1000, "sustained_rate": 70000.0},
        },
        "live": {"latency": {"p50_ms": 5.0, "p99_ms": 50.0}, "cdf": [(5.0, 0.5), (50.0, 1.0)]},
    }
    results.update(overrides)
    return results


def _by_key(results: dict[str, Any]) -> dict[str, Any]:
    return {f.key: f for f in figures(results)}


def test_ratios_and_targets() -> None:
    figs = _by_key(_results())
    assert figs["ratio_throughput"].value == 3.0 and figs["ratio_throughput"].ok is True
    assert figs["ratio_p50_rest"].value == 0.8 and figs["ratio_p50_rest"].ok is True
    assert figs["ratio_p50_nats"].value == 0.6
    assert figs["ratio_ingest_copy"].value == 0.7 and figs["ratio_ingest_copy"].ok is True
    assert figs["live_p99_ms"].ok is True
    assert figs["loom_echo_throughput"].shown() == "1,800 tasks/s"
    assert figs["ratio_throughput"].shown() == "3.00×"


def test_missing_parts_are_na_with_the_reason() -> None:
    results = _results(
        ingest={"na": "table events does not exist (ingest not deployed yet?)"},
        live={"na": "cannot connect to ws://127.0.0.1:8004/ws/events: HTTP 404"},
        celery={"na": "celery baseline failed: boom"},
    )
    figs = _by_key(results)
    assert figs["ingest_lag_p50_ms"].value is None
    assert "does not exist" in figs["ingest_lag_p50_ms"].note
    assert figs["ratio_ingest_copy"].shown() == "n/a" and figs["ratio_ingest_copy"].ok is None
    assert "does not exist" in figs["ratio_ingest_copy"].note
    assert figs["live_p99_ms"].value is None and "404" in figs["live_p99_ms"].note
    assert figs["celery_throughput"].note.startswith("celery baseline failed")
    assert figs["ratio_throughput"].value is None


def test_an_empty_run_still_renders() -> None:
    results: dict[str, Any] = {"run": {}, "phases": []}
    assert all(f.value is None for f in figures(results))
    Console(file=None, width=120, record=True).print(rich_table(results))
    assert "<html" in render_html(results)


def test_write_reports_writes_json_and_self_contained_html(tmp_path: Path) -> None:
    json_path, html_path = write_reports(_results(), tmp_path / "bench-x")
    data = json.loads(json_path.read_text())
    assert data["run"]["id"] == "abc"
    assert {f["key"] for f in data["figures"]} >= {"ratio_throughput", "raw_copy", "live_p99_ms"}
    page = html_path.read_text()
    assert page.count("<svg") == 2  # latency CDF and throughput over time
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "echo-nats-closed" in page


def test_svg_chart_is_well_formed_xml() -> None:
    svg = svg_chart(
        {"a <b>": [(0.5, 10.0), (5.0, 50.0), (50.0, 100.0)], "empty": []},
        x_label="latency (ms)",
        y_label="%",
        x_log=True,
        y_max=100,
    )
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    polylines = [el for el in root.iter() if el.tag.endswith("polyline")]
    assert len(polylines) == 1
    assert svg_chart({}, x_label="x", y_label="y").startswith("<p")


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    from loom_load.report import nice_ticks

    assert nice_ticks(0, 168) == [0, 50, 100, 150, 200]
    assert nice_ticks(0, 92) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0, 100) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0, 0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
