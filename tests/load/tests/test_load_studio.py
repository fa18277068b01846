"""The pure parts of loom_load.studio: percentiles, the synthetic trace and its database rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from loom_load.studio import (
    _COPY_COLUMNS,
    parse_args,
    percentile,
    summarize,
    synthetic_event,
    synthetic_trace,
)


def test_percentiles_interpolate_between_ranks_and_are_none_when_empty() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 100
    assert percentile([], 50) is None
    assert summarize([3.0, 1.0, 2.0]) == {
        "count": 3,
        "p50_ms": 2.0,
        "p95_ms": 2.9,
        "p99_ms": 2.98,
        "max_ms": 3.0,
    }
    assert summarize([])["p95_ms"] is None


def test_a_synthetic_trace_cycles_llm_and_tool_calls_of_one_task_in_time_order() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    rows = list(synthetic_trace("t1", "a" * 32, 12, start))
    assert len(rows) == 12 and all(len(r) == len(_COPY_COLUMNS) for r in rows)
    column = {name: i for i, name in enumerate(_COPY_COLUMNS)}
    types = [r[column["type"]] for r in rows[:5]]
    assert types == ["llm.request", "llm.usage", "tool.call", "tool.result", "agent.thought"]
    times = [r[column["time"]] for r in rows]
    assert times == sorted(times) and len(set(times)) == 12
    assert {r[column["task_id"]] for r in rows} == {"t1"}
    assert len({r[column["id"]] for r in rows}) == 12
    usage = rows[1]
    assert usage[column["input_tokens"]] == 30 and json.loads(usage[column["data"]])["step"] == 1
    attributes = json.loads(usage[column["attributes"]])
    assert "data" not in attributes and attributes["taskid"] == "t1" and attributes["time"].endswith("Z")
    tool = synthetic_event(7, "t1", "a" * 32, start)
    assert tool["type"] == "tool.call" and tool["data"]["call_id"] == "c2"


def test_the_defaults_measure_a_100k_trace_and_1k_events_a_second() -> None:
    args = parse_args([])
    assert (args.events, args.rate) == (100_000, 1000)
