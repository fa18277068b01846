"""Every submitted task is accounted for exactly once (loom_load.ledger)."""

from __future__ import annotations

import pytest
from loom_load.ledger import BUCKETS, Ledger


def _ledger(n: int) -> Ledger:
    ledger = Ledger()
    for i in range(n):
        ledger.submitted(f"t{i}")
    return ledger


def test_each_task_lands_in_exactly_one_bucket() -> None:
    ledger = _ledger(8)
    ledger.finished("t0", "completed", "nats")
    ledger.finished("t1", "failed", "nats")
    ledger.finished("t2", "dead", "nats")
    ledger.finished("t3", "cancelled", "rest")
    ledger.submit_failed("t4", "TimeoutError")
    ledger.looked_up("t5", "running")  # still running after the grace period: missing
    ledger.looked_up("t6", None)  # unknown to the dispatcher: missing
    # t7: never heard of again: missing
    acc = ledger.accounting()
    assert {b: acc[b] for b in BUCKETS} == {
        "completed": 1,
        "failed": 1,
        "dead": 1,
        "cancelled": 1,
        "rejected": 1,
        "missing": 3,
    }
    assert acc["total"] == 8 and acc["lost"] == 3
    assert acc["submit_errors"] == {"TimeoutError": 1}
    assert acc["missing_by_status"] == {"running": 1, "unknown to the dispatcher": 1}
    assert ledger.all_accounted


def test_first_outcome_wins() -> None:
    ledger = _ledger(1)
    assert ledger.finished("t0", "completed", "rest")
    ledger.finished("t0", "dead", "nats")
    assert ledger.accounting()["completed"] == 1
    assert ledger.entries["t0"].outcome_via == "rest"


def test_non_terminal_or_foreign_outcomes_are_ignored() -> None:
    ledger = _ledger(1)
    assert not ledger.finished("t0", "running", "nats")
    assert not ledger.finished("other", "completed", "nats")
    assert ledger.accounting()["missing"] == 1


def test_a_failed_submission_that_completed_anyway_counts_as_completed() -> None:
    ledger = _ledger(1)
    ledger.submit_failed("t0", "TimeoutError")  # the ack was lost, the task was not
    ledger.finished("t0", "completed", "nats")
    acc = ledger.accounting()
    assert acc["completed"] == 1 and acc["rejected"] == 0


def test_lookup_finds_a_terminal_state_we_did_not_hear() -> None:
    ledger = _ledger(2)
    ledger.looked_up("t0", "completed")
    ledger.finished("t1", "completed", "nats")
    ledger.looked_up("t1", "dead")  # already decided: a lookup does not change it
    acc = ledger.accounting()
    assert acc["completed"] == 2 and acc["seen_only_by_lookup"] == 1


def test_open_and_pending_ids() -> None:
    ledger = _ledger(3)
    ledger.finished("t0", "completed", "nats")
    ledger.submit_failed("t1", "HTTP 503")
    assert sorted(ledger.open_ids()) == ["t1", "t2"]
    assert ledger.pending_ids() == ["t2"]


def test_submitting_the_same_id_twice_is_a_harness_bug() -> None:
    ledger = _ledger(1)
    with pytest.raises(ValueError, match="twice"):
        ledger.submitted("t0")
