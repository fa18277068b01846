"""Human approval of tool calls: keys, the request/decision/input models and how a Task carries them."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from loom_protocol import (
    APPROVAL_TIMEOUT_ACTION_KEY,
    APPROVAL_TIMEOUT_KEY,
    APPROVAL_TOOLS_KEY,
    RESUME_KEY,
    ApprovalDecision,
    ApprovalInput,
    ApprovalRequest,
    ApprovalTimeoutAction,
    Task,
    TaskStatus,
    TaskStatusChanged,
    approval_key,
    validation_reason,
)
from pydantic import ValidationError

AT = datetime(2025, 6, 1, 8, 30, tzinfo=timezone(timedelta(hours=2)))
REQUEST = ApprovalRequest(
    key="2.1",
    tool="transfer",
    arguments={"amount": 10, "to": "acct-1"},
    reasoning="the invoice is due",
    call_id="call-7",
    step=2,
    attempt=1,
    requested_at=AT,
)


def _decision(key: str, approved: bool, by: str) -> ApprovalDecision:
    return ApprovalDecision(key=key, tool="transfer", approved=approved, by=by, decided_at=AT)


# ---------------------------------------------------------------- keys and metadata


def test_approval_key_names_the_step_and_the_call_within_it() -> None:
    assert approval_key(1, 0) == "1.0"
    assert approval_key(12, 3) == "12.3"
    keys = {approval_key(step, index) for step in range(1, 12) for index in range(12)}
    assert len(keys) == 11 * 12  # (1, 11) and (11, 1) are told apart


def test_metadata_keys_and_timeout_actions_are_pinned() -> None:
    assert APPROVAL_TOOLS_KEY == "approvalTools"
    assert APPROVAL_TIMEOUT_KEY == "approvalTimeoutS"
    assert APPROVAL_TIMEOUT_ACTION_KEY == "approvalTimeoutAction"
    assert RESUME_KEY == "resume"
    assert [a.value for a in ApprovalTimeoutAction] == ["reject", "dead"]
    assert ApprovalTimeoutAction("dead") is ApprovalTimeoutAction.DEAD
    with pytest.raises(ValueError):
        ApprovalTimeoutAction("approve")


# ---------------------------------------------------------------- the body of approve/reject


def test_approval_input_takes_every_field_as_optional() -> None:
    empty = ApprovalInput.model_validate({})
    assert (empty.arguments, empty.by, empty.reason) == (None, None, None)
    body = ApprovalInput.from_json(b'{"arguments": {"amount": 5}, "by": "alice", "reason": "less"}')
    assert body == ApprovalInput(arguments={"amount": 5}, by="alice", reason="less")


@pytest.mark.parametrize("field", ["approved", "key", "tool", "someTypo"])
def test_approval_input_forbids_unknown_fields(field: str) -> None:
    with pytest.raises(ValidationError) as exc_info:
        ApprovalInput.model_validate({"reason": "r", field: True})
    assert validation_reason(exc_info.value).startswith(f"field '{field}': Extra inputs are not permitted")


@pytest.mark.parametrize(("field", "limit"), [("by", 256), ("reason", 4096)])
def test_approval_input_bounds_by_and_reason(field: str, limit: int) -> None:
    assert getattr(ApprovalInput.model_validate({field: "x" * limit}), field) == "x" * limit
    with pytest.raises(ValidationError) as exc_info:
        ApprovalInput.model_validate({field: "x" * (limit + 1)})
    assert validation_reason(exc_info.value).startswith(f"field '{field}': String should have at most")


@pytest.mark.parametrize(("field", "limit"), [("by", 256), ("reason", 4096)])
def test_approval_decision_bounds_by_and_reason(field: str, limit: int) -> None:
    base = {"key": "1.0", "tool": "t", "approved": False}
    ApprovalDecision.model_validate({**base, field: "x" * limit})
    with pytest.raises(ValidationError):
        ApprovalDecision.model_validate({**base, field: "x" * (limit + 1)})


@pytest.mark.parametrize("model", [ApprovalRequest, ApprovalDecision])
@pytest.mark.parametrize("key", ["", "k" * 65])
def test_approval_keys_are_bounded(model: type[ApprovalRequest | ApprovalDecision], key: str) -> None:
    with pytest.raises(ValidationError):
        model.model_validate({"key": key, "tool": "t", "approved": True})


def test_approval_request_step_counts_from_one() -> None:
    with pytest.raises(ValidationError):
        ApprovalRequest(key="0.0", tool="t", step=0)


# ---------------------------------------------------------------- on the task


def test_decision_for_returns_the_latest_decision_on_a_key() -> None:
    first = _decision("1.0", approved=False, by="bob")
    other = _decision("2.0", approved=True, by="carol")
    latest = _decision("1.0", approved=True, by="alice")
    task = Task(target_agent="calc", approvals=[first, other, latest])
    assert task.decision_for("1.0") is latest
    assert task.decision_for("2.0") is other
    assert task.decision_for("3.0") is None
    assert Task(target_agent="calc").decision_for("1.0") is None


def test_a_task_waiting_on_approval_round_trips_with_camel_case_keys() -> None:
    task = Task(
        task_id="run:1",
        target_agent="payments",
        status=TaskStatus.INPUT_REQUIRED,
        pending_approval=REQUEST,
        approvals=[
            ApprovalDecision(
                key="1.0",
                tool="lookup",
                approved=True,
                arguments={"q": "edited"},
                by="alice",
                reason="fine",
                decided_at=AT,
            )
        ],
    )
    wire = task.to_wire()
    assert wire["status"] == "input_required"
    assert "pending_approval" not in wire
    assert wire["pendingApproval"] == {
        "key": "2.1",
        "tool": "transfer",
        "arguments": {"amount": 10, "to": "acct-1"},
        "reasoning": "the invoice is due",
        "callId": "call-7",
        "step": 2,
        "attempt": 1,
        "requestedAt": "2025-06-01T08:30:00+02:00",
    }
    assert wire["approvals"] == [
        {
            "key": "1.0",
            "tool": "lookup",
            "approved": True,
            "arguments": {"q": "edited"},
            "by": "alice",
            "reason": "fine",
            "decidedAt": "2025-06-01T08:30:00+02:00",
        }
    ]
    again = Task.from_json(task.to_json())
    assert again == task
    assert again.pending_approval == REQUEST and again.decision_for("1.0") == task.approvals[0]
    assert Task.model_validate(wire) == task


def test_a_task_without_approvals_reads_as_having_none() -> None:
    task = Task.model_validate({"taskId": "t-1", "targetAgent": "calc", "status": "running"})
    assert task.pending_approval is None and task.approvals == []


def test_waiting_then_deciding_moves_the_request_into_the_decisions() -> None:
    running = Task(target_agent="payments", status=TaskStatus.RUNNING, instance_id="w-1", attempt=1)
    waiting = running.with_status(TaskStatus.INPUT_REQUIRED, instance_id=None, pending_approval=REQUEST)
    assert waiting.pending_approval == REQUEST
    decision = ApprovalDecision(key=REQUEST.key, tool=REQUEST.tool, approved=False, reason="no")
    resumed = waiting.with_status(
        TaskStatus.PENDING, pending_approval=None, approvals=[*waiting.approvals, decision]
    )
    assert resumed.status is TaskStatus.PENDING and resumed.pending_approval is None
    assert resumed.decision_for(REQUEST.key) == decision
    assert waiting.approvals == []  # the original is left alone


def test_status_change_carries_the_call_waited_on() -> None:
    change = TaskStatusChanged(
        task_id="run:1", target_agent="payments", status=TaskStatus.INPUT_REQUIRED, approval=REQUEST
    )
    wire = change.to_wire()
    assert wire["approval"]["callId"] == "call-7" and wire["status"] == "input_required"
    assert TaskStatusChanged.from_json(change.to_json()) == change
    assert "approval" not in TaskStatusChanged(task_id="t", target_agent="c", status="running").to_wire()


def test_decision_time_defaults_to_now_and_is_aware() -> None:
    before = datetime.now(UTC)
    decision = ApprovalDecision(key="1.0", tool="t", approved=True)
    assert before <= decision.decided_at <= datetime.now(UTC)
    with pytest.raises(ValidationError):
        ApprovalDecision(key="1.0", tool="t", approved=True, decided_at=datetime(2025, 1, 1))
