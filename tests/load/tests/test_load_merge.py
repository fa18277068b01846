"""A phase measured by several client processes merges into one exact summary (loom_load.loom,
loom_load.ledger, loom_load.client_procs)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from loom_load.client_procs import run_spread, split
from loom_load.ledger import BUCKETS, Ledger, merge_accounting, unreported
from loom_load.loom import PhasePart, PhaseSpec, summarize
from loom_load.observe import Trace

SPEC = PhaseSpec("echo-rest-closed", "echo closed loop REST c=4", "echo", "rest", "closed", 10, 4)


def _ledger_accounting(
    outcomes: dict[str, str | None], errors: dict[str, str] | None = None
) -> dict[str, Any]:
    ledger = Ledger()
    for task_id, outcome in outcomes.items():
        ledger.submitted(task_id)
        if outcome is not None:
            ledger.finished(task_id, outcome, "rest")
    for task_id, error in (errors or {}).items():
        ledger.submit_failed(task_id, error)
    return ledger.accounting()


def _part(
    prefix: str, t0: float, latencies: list[float], outcomes: dict[str, str | None], **kw: Any
) -> PhasePart:
    completions = [t0 + 0.1 * (i + 1) for i in range(len(latencies))]
    return PhasePart(
        t0=t0,
        submit_done=kw.get("submit_done", t0 + 1.0),
        first_submit=t0 + 0.01,
        last_submit=kw.get("last_submit", t0 + 0.5),
        last_final=completions[-1] if completions else None,
        accepted=len(outcomes) - len(kw.get("errors", {})),
        latencies=latencies,
        completion_times=completions,
        accounting=_ledger_accounting(outcomes, kw.get("errors")),
        task_ids=list(outcomes),
        t_submit={t: 1000.0 for t in outcomes},
        cpu_s=kw.get("cpu_s", 0.2),
        pid=kw.get("pid", 1),
    )


def test_split_shares_differ_by_at_most_one() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert split(64, 2) == [32, 32]
    assert split(1, 2) == [1, 0]
    assert sum(split(1001, 7)) == 1001
    with pytest.raises(ValueError):
        split(3, 0)


def test_merge_accounting_sums_buckets_and_merges_the_detail() -> None:
    a = _ledger_accounting({"a0": "completed", "a1": None, "a2": None}, {"a2": "HTTP 503"})
    b = _ledger_accounting({"b0": "completed", "b1": "failed", "b2": None}, {"b2": "HTTP 503"})
    b["missing_by_status"] = {"running": 1}
    merged = merge_accounting([a, b])
    assert {k: merged[k] for k in BUCKETS} == {
        "completed": 2,
        "failed": 1,
        "dead": 0,
        "cancelled": 0,
        "rejected": 2,
        "missing": 1,
    }
    assert merged["total"] == 6 == sum(merged[k] for k in BUCKETS)
    assert merged["submit_errors"] == {"HTTP 503": 2}
    assert merged["missing_by_status"] == {"running": 1}


def test_a_share_never_reported_is_counted_missing_with_its_reason() -> None:
    merged = merge_accounting([_ledger_accounting({"a0": "completed"}), unreported(4, "client 1 exited")])
    assert merged["completed"] == 1 and merged["missing"] == 4 and merged["total"] == 5
    assert merged["missing_by_status"] == {"client 1 exited": 4}
    assert unreported(0, "x")["total"] == 0 and "missing_by_status" not in unreported(0, "x")


def test_summarize_two_processes_merges_latencies_rates_and_accounting() -> None:
    one = _part(
        "p0",
        100.0,
        [0.010, 0.020, 0.030],
        {"p0-0": "completed", "p0-1": "completed", "p0-2": "completed"},
        pid=11,
    )
    two = _part(
        "p1",
        100.2,
        [0.040, 0.050],
        {"p1-0": "completed", "p1-1": "completed", "p1-2": "dead"},
        pid=12,
        cpu_s=0.4,
    )
    traces = {"p0-0": Trace(ev_submitted=1000.002), "p1-0": Trace(ev_submitted=1000.004)}
    summary = summarize(SPEC, [one, two], traces)
    assert summary["latency"]["count"] == 5
    assert summary["latency"]["p50_ms"] == pytest.approx(30.0, rel=0.01)
    assert summary["latency"]["max_ms"] == pytest.approx(50.0, rel=0.01)
    # the span runs from the first process's start to the last completion of any of them
    assert summary["duration_s"] == pytest.approx(0.4)
    assert summary["throughput"] == pytest.approx(5 / 0.4, abs=0.1)
    assert summary["accounting"]["completed"] == 5 and summary["accounting"]["dead"] == 1
    assert summary["submitted"] == 6 and summary["stopped_by"] == "time limit"
    assert [p["pid"] for p in summary["client_procs"]] == [11, 12]
    assert summary["client_procs"][1]["cpu_pct"] == pytest.approx(100.0)
    # submission times from the client processes feed the harness's traces: the first hop exists
    assert summary["hops"]["submit→submitted"]["count"] == 2
    assert sum(c for _, c in summary["timeline"]) == pytest.approx(5.0)


def test_summarize_one_process_has_no_client_list() -> None:
    part = _part("p0", 5.0, [0.01], {"p0-0": "completed"})
    summary = summarize(SPEC, [part], {})
    assert "client_procs" not in summary
    assert summary["harness_cpu_pct"] == pytest.approx(100 * 0.2 / 0.1, rel=0.01)


def test_client_processes_that_cannot_start_leave_every_task_accounted_for() -> None:
    spec = PhaseSpec("echo-rest-closed", "echo REST", "echo", "rest", "closed", 7, 4)
    summary, _ = asyncio.run(
        run_spread(
            spec,
            2,
            nats_servers=["nats://127.0.0.1:1"],  # nothing listens: each client process fails to start
            dispatcher_url="http://127.0.0.1:1",
            headers={},
            prefix="lttest-",
            phase_timeout_s=5,
            grace_s=1,
            traces={},
        )
    )
    acc = summary["accounting"]
    assert acc["total"] == 7 and acc["missing"] == 7 and acc["completed"] == 0
    assert summary["submitted"] == 7
    assert len(summary["client_errors"]) == 2
