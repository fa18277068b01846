"""Figures, ratios and the written reports (loom_load.report), on a synthetic run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from loom_load.report import (
    cpu_per_task,
    cpu_table,
    figures,
    judge,
    peers,
    peers_table,
    render_html,
    rich_table,
    svg_chart,
    write_reports,
)
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
            "copy_events": {"rate": 50000.0, "hypertable": True, "indexes": 6},
        },
        "ingest": {
            "lag": {
                "lag": {"p50_ms": 40.0, "p99_ms": 400.0},
                "by_phase": {"echo-nats-closed": {"p50_ms": 30.0, "p99_ms": 90.0}},
            },
            "burst": {"events": 1000, "sustained_rate": 70000.0},
        },
        "live": {
            "latency": {"p50_ms": 5.0, "p99_ms": 400.0},
            "by_phase": {"echo-nats-open": {"p50_ms": 5.0, "p99_ms": 60.0}},
            "paced_latency": {"p50_ms": 2.0, "p99_ms": 40.0},
            "cdf": [(5.0, 0.5), (400.0, 1.0)],
            "paced_cdf": [(2.0, 0.5), (40.0, 1.0)],
        },
        "live_paced": {"events": 5000, "target_rate": 1000.0, "seconds": 5.01, "rate": 998.0},
        "taskiq": {
            "workers": 2,
            "closed": {"throughput": 900.0, "latency": {"p50_ms": 60.0}},
            "sequential": {"latency": {"p50_ms": 3.0, "p99_ms": 5.0}},
        },
        "floor": {
            "workers": 2,
            "worker_exit": [1, 0],
            "closed": {"throughput": 7200.0, "latency": {"p50_ms": 8.0}},
            "sequential": {"latency": {"p50_ms": 0.6, "p99_ms": 1.5}},
        },
        "faststream": {"na": "faststream failed: RuntimeError: the worker exited before it answered"},
        "run": {
            "id": "abc",
            "profile": "short",
            "started_at": "now",
            "duration_s": 1.0,
            "broker_pids": {"nats-server": [10], "redis-server": [20]},
        },
        "cpu_s": {
            "echo-nats-closed": {
                "wall_s": 1.0,
                "tasks": 1000,
                "by_process_s": {
                    "dispatcher[1]": 1.2,
                    "agent-worker[2]": 0.4,
                    "agent-worker[3]": 0.4,
                    "nats-server[10]": 0.5,
                    "nats-server[99]": 4.0,
                    "postgres": 0.3,
                    "harness": 0.6,
                },
            },
            "taskiq-closed": {
                "wall_s": 1.0,
                "tasks": 500,
                "by_process_s": {
                    "harness": 0.5,
                    "taskiq[5]": 0.4,
                    "nats-server[10]": 0.1,
                    "redis-server[20]": 0.1,
                    "dispatcher[1]": 0.05,
                },
            },
        },
    }
    results.update(overrides)
    return results


def _by_key(results: dict[str, Any]) -> dict[str, Any]:
    return {f.key: f for f in figures(results)}


def test_ratios_and_targets() -> None:
    figs = _by_key(_results())
    assert figs["ratio_throughput"].value == 3.0 and figs["ratio_throughput"].ok is True
    assert figs["ratio_throughput"].target == "≥ 1.5×"
    assert figs["ratio_throughput_taskiq"].value == 2.0 and figs["ratio_throughput_taskiq"].ok is True
    assert figs["ratio_throughput_floor"].value == 0.25 and figs["ratio_throughput_floor"].ok is None
    assert figs["ratio_throughput_faststream"].value is None
    assert "worker exited" in figs["ratio_throughput_faststream"].note
    assert figs["ratio_p50_rest"].value == 0.8 and figs["ratio_p50_rest"].ok is True
    assert figs["ratio_p50_nats"].value == 0.6 and figs["ratio_p50_nats"].target == "≤ 1.2×"
    assert figs["ratio_ingest_copy"].value == 0.7 and figs["ratio_ingest_copy"].ok is True
    assert figs["ratio_ingest_fetch"].value == 70000 / 27000 and figs["ratio_ingest_fetch"].ok is None
    assert figs["raw_copy_events"].value == 50000.0
    assert figs["ratio_ingest_copy_events"].value == 1.4 and figs["ratio_ingest_copy_events"].ok is None
    assert figs["ratio_fetch_copy"].value == 27000 / 100000 and figs["ratio_fetch_copy"].ok is None
    assert figs["ratio_copy_events_copy"].value == 0.5 and figs["ratio_copy_events_copy"].ok is None
    assert figs["ingest_lag_p99_ms"].target == "< 250 ms" and figs["ingest_lag_p99_ms"].ok is True
    assert figs["ingest_lag_p99_ms"].value == 90.0  # the closed loop's events; the whole run's beside it
    assert figs["ingest_lag_all_p99_ms"].value == 400.0 and figs["ingest_lag_all_p99_ms"].ok is None
    assert figs["live_p99_ms"].ok is True and figs["live_p99_ms"].target == "< 50 ms"
    assert figs["live_p99_ms"].value == 40.0  # the paced events'; the open loop's beside it
    assert "1,000 events/s" in figs["live_p99_ms"].label and figs["live_p99_ms"].note == "sent at 998/s"
    assert figs["live_open_p99_ms"].value == 60.0 and figs["live_open_p99_ms"].ok is None
    assert figs["live_all_p99_ms"].value == 400.0 and figs["live_all_p99_ms"].ok is None
    assert figs["loom_echo_throughput"].shown() == "1,800 tasks/s"
    assert figs["ratio_throughput"].shown() == "3.00×"


def test_targets_missed_are_marked() -> None:
    results = _results(
        live={"latency": {"p50_ms": 5.0, "p99_ms": 9.0}, "paced_latency": {"p50_ms": 5.0, "p99_ms": 50.0}}
    )
    results["phases"].append(_phase("echo-rest-closed", 1000.0, 50.0, 90.0))
    figs = _by_key(results)
    assert figs["live_p99_ms"].ok is False  # < 50 ms: 50 is not enough
    assert figs["ratio_rest_nats"].value == pytest.approx(1000 / 1800) and figs["ratio_rest_nats"].ok is False


def test_judge_each_comparison() -> None:
    assert judge(1.5, ">=", 1.5) is True and judge(1.49, ">=", 1.5) is False
    assert judge(1.2, "<=", 1.2) is True and judge(50.0, "<", 50.0) is False
    assert judge(None, "<", 1.0) is None


def test_cpu_per_task_sums_the_stack_and_each_peer() -> None:
    cpu = cpu_per_task(_results())
    loom = cpu["echo-nats-closed"]
    # stack: dispatcher 1.2 + workers 0.8 + its NATS 0.5 + postgres 0.3 = 2.8 s over 1000 tasks
    assert loom["system_ms"] == pytest.approx(2.8) and loom["client_ms"] == pytest.approx(0.6)
    assert loom["sum_ms"] == pytest.approx(3.4) and loom["all_ms"] == pytest.approx(7.4)
    assert loom["by_process_ms"]["dispatcher[1]"] == pytest.approx(1.2)
    taskiq = cpu["taskiq-closed"]
    # client 0.5 + worker 0.4 + NATS 0.1 + Redis 0.1 = 1.1 s over 500 tasks; the idle dispatcher not
    assert taskiq["system"] == "taskiq-nats"
    assert taskiq["sum_ms"] == pytest.approx(2.2) and taskiq["system_ms"] == pytest.approx(1.2)
    figs = _by_key(_results())
    assert figs["cpu_per_echo_task"].value == pytest.approx(2.8) and figs["cpu_per_echo_task"].ok is True
    # the event store: postgres 0.3 (no ingest process in this run); the rest with the client,
    # 3.1 ms, against taskiq's 2.2
    assert figs["cpu_per_echo_task_event_store"].value == pytest.approx(0.3)
    assert figs["ratio_cpu_without_store_taskiq"].value == pytest.approx(3.1 / 2.2)
    assert figs["ratio_cpu_without_store_taskiq"].ok is None


def test_peers_rows_have_throughput_latency_and_cpu() -> None:
    rows = {r["key"]: r for r in peers(_results())}
    assert list(rows) == ["loom", "celery", "taskiq", "faststream", "floor"]
    assert rows["taskiq"]["throughput"] == 900.0 and rows["taskiq"]["seq_p50_ms"] == 3.0
    assert rows["taskiq"]["cpu_ms_per_task"] == pytest.approx(2.2)
    assert rows["loom"]["cpu_ms_per_task"] == pytest.approx(3.4)
    assert rows["faststream"]["throughput"] is None and "worker exited" in rows["faststream"]["note"]
    assert rows["floor"]["note"].startswith("worker exit code(s) [1]") and rows["taskiq"]["note"] == ""
    console = Console(file=None, width=160, record=True)
    console.print(peers_table(_results()))
    console.print(cpu_table(_results()))
    text = console.export_text()
    assert "taskiq-nats" in text and "echo-nats-closed" in text


def test_io_figures_flag_tasks_that_did_not_wait() -> None:
    results = _results(
        io={"delay_s": 0.1, "concurrency": 64, "celery": {"closed": _phase("x", 600.0, 104.0, 130.0)}}
    )
    results["phases"].append(_phase("io-loom", 2000.0, 25.0, 60.0, extra_params={"delayS": 0.1}))
    figs = _by_key(results)
    assert figs["io_celery_ratio_ideal"].value == pytest.approx(600 / 640, abs=0.001)
    assert figs["io_celery_ratio_ideal"].note == ""
    assert figs["io_loom_p50_ms"].value == 25.0
    assert "did not wait" in figs["io_loom_ratio_ideal"].note


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
    assert data["cpu_per_task"]["taskiq-closed"]["tasks"] == 500
    assert [r["key"] for r in data["peers"]][:3] == ["loom", "celery", "taskiq"]
    page = html_path.read_text()
    assert page.count("<svg") == 2  # latency CDF and throughput over time
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "echo-nats-closed" in page
    assert "<h2>Peers</h2>" in page and "CPU per task" in page


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
