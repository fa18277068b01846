"""Task, its state machine and the task lifecycle messages."""

from datetime import UTC, datetime, timedelta

import pytest
from loom_protocol import (
    TERMINAL_STATUSES,
    InvalidTransition,
    RejectedMessage,
    Task,
    TaskAction,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatus,
    TaskStatusChanged,
    TraceContext,
    is_terminal,
    validation_reason,
)
from loom_protocol.tasks import ALLOWED_TRANSITIONS, can_transition
from pydantic import ValidationError

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

A2A_TASK = {
    "taskId": "task-42",
    "sourceAgent": "concierge",
    "targetAgent": "calculator",
    "action": "execute",
    "parameters": {"expression": "6*7"},
    "status": "completed",
    "result": {"value": 42},
    "error": "none really",
    "metadata": {"duration_ms": 12.5},
    "parentTaskId": "task-1",
    "sessionId": "session-9",
}

PLATFORM_KEYS = {"attempt", "createdAt", "updatedAt", "trace", "approvals"}


def _reason(exc_info: pytest.ExceptionInfo[ValidationError]) -> str:
    return validation_reason(exc_info.value)


# ---------------------------------------------------------------- A2A compatibility


def test_a2a_camel_case_task_validates_and_round_trips_its_keys() -> None:
    task = Task.model_validate(A2A_TASK)
    assert task.task_id == "task-42"
    assert task.source_agent == "concierge"
    assert task.target_agent == "calculator"
    assert task.action is TaskAction.EXECUTE
    assert task.status is TaskStatus.COMPLETED
    assert task.parent_task_id == "task-1"
    assert task.session_id == "session-9"

    wire = task.to_wire()
    assert set(wire) == set(A2A_TASK) | PLATFORM_KEYS
    for key, value in A2A_TASK.items():
        assert wire[key] == value, key
    assert wire["attempt"] == 0
    assert wire["trace"] == {}
    assert wire["approvals"] == []
    assert "pendingApproval" not in wire


def test_snake_case_input_is_accepted_too() -> None:
    snake = {
        "task_id": "task-42",
        "source_agent": "concierge",
        "target_agent": "calculator",
        "action": "execute",
        "parameters": {"expression": "6*7"},
        "status": "completed",
        "result": {"value": 42},
        "error": "none really",
        "metadata": {"duration_ms": 12.5},
        "parent_task_id": "task-1",
        "session_id": "session-9",
    }
    from_snake = Task.model_validate(snake)
    from_camel = Task.model_validate(A2A_TASK)
    assert from_snake.model_dump(exclude={"created_at", "updated_at"}) == from_camel.model_dump(
        exclude={"created_at", "updated_at"}
    )


def test_wire_keys_are_camel_case_and_none_is_left_out() -> None:
    task = Task(target_agent="calc")
    assert b"null" not in task.to_json() and b"targetAgent" in task.to_json()
    wire = task.to_wire()
    assert "targetAgent" in wire and "target_agent" not in wire
    assert "result" not in wire and "error" not in wire and "parentTaskId" not in wire


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    task = Task.model_validate({"targetAgent": "calc", "someFutureField": {"x": 1}})
    assert "someFutureField" not in task.to_wire()
    assert not hasattr(task, "someFutureField")


def test_defaults() -> None:
    before = datetime.now(UTC)
    task = Task(target_agent="calc")
    assert len(task.task_id) == 32 and int(task.task_id, 16) >= 0
    assert task.status is TaskStatus.PENDING
    assert task.action is TaskAction.EXECUTE
    assert task.attempt == 0
    assert task.created_at.tzinfo is not None
    assert before <= task.created_at <= datetime.now(UTC)
    assert task.trace == TraceContext()
    assert Task(target_agent="calc").task_id != task.task_id


# ---------------------------------------------------------------- rejection


def test_missing_target_agent_is_rejected_with_a_clear_reason() -> None:
    with pytest.raises(ValidationError) as exc_info:
        Task.from_json(b'{"taskId": "t1", "parameters": {}}')
    assert _reason(exc_info) == "field 'targetAgent': Field required"


@pytest.mark.parametrize("agent", ["calc.v2", "calc*", "calc>", "calc x", "", "a" * 129, "calc\n"])
def test_target_agent_must_be_a_subject_token(agent: str) -> None:
    with pytest.raises(ValidationError) as exc_info:
        Task.model_validate({"targetAgent": agent})
    assert _reason(exc_info).startswith("field 'targetAgent': String should")


@pytest.mark.parametrize("task_id", ["a.b", "a b", "a*", "", "x" * 129, "a/b"])
def test_task_id_must_be_a_subject_token(task_id: str) -> None:
    with pytest.raises(ValidationError) as exc_info:
        Task.model_validate({"taskId": task_id, "targetAgent": "calc"})
    assert _reason(exc_info).startswith("field 'taskId': String should")


def test_task_id_allows_colon_underscore_dash() -> None:
    assert Task(task_id="run:1_a-b", target_agent="calc").task_id == "run:1_a-b"


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc_info:
        Task.model_validate({"targetAgent": "calc", "createdAt": "2025-01-01T00:00:00"})
    assert _reason(exc_info) == "field 'createdAt': Input should have timezone info"
    with pytest.raises(ValidationError) as exc_info:
        Task(target_agent="calc", created_at=datetime(2025, 1, 1))
    # Python-side construction reports the Python name.
    assert _reason(exc_info) == "field 'created_at': Input should have timezone info"


def test_negative_attempt_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Task(target_agent="calc", attempt=-1)


def test_task_is_mutable_but_assignments_are_validated() -> None:
    task = Task(target_agent="calc")
    task.metadata["k"] = "v"
    task.attempt = 2
    assert task.attempt == 2
    with pytest.raises(ValidationError):
        task.attempt = -1
    with pytest.raises(ValidationError):
        task.target_agent = "bad.agent"


# ---------------------------------------------------------------- trace context


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # other version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
        "garbage",
        "",
    ],
)
def test_bad_traceparent_is_rejected(traceparent: str) -> None:
    with pytest.raises(ValidationError) as exc_info:
        Task.model_validate({"targetAgent": "calc", "trace": {"traceparent": traceparent}})
    reason = _reason(exc_info)
    assert reason.startswith("field 'trace.traceparent': invalid traceparent")


def test_trace_id_is_the_32_hex_part() -> None:
    trace = TraceContext(traceparent=TRACEPARENT, tracestate="congo=t61rcWkgMzE")
    assert trace.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert TraceContext().trace_id is None


# ---------------------------------------------------------------- state machine

EXPECTED_TABLE = {
    "pending": {"dispatched", "cancelled", "dead"},
    "dispatched": {
        "running",
        "input_required",
        "pending",
        "dispatched",
        "completed",
        "failed",
        "cancelled",
        "dead",
    },
    "running": {"completed", "failed", "cancelled", "pending", "dispatched", "dead", "input_required"},
    "input_required": {"pending", "cancelled", "dead", "failed"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
    "dead": set(),
}


def test_transition_table_is_pinned() -> None:
    table = {str(k): {str(v) for v in vs} for k, vs in ALLOWED_TRANSITIONS.items()}
    assert table == EXPECTED_TABLE
    assert set(ALLOWED_TRANSITIONS) == set(TaskStatus)


def test_transition_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        ALLOWED_TRANSITIONS[TaskStatus.DEAD] = frozenset({TaskStatus.PENDING})  # type: ignore[index]


def test_task_is_terminal_property() -> None:
    assert Task(target_agent="calc", status=TaskStatus.DEAD).is_terminal is True
    assert Task(target_agent="calc", status=TaskStatus.RUNNING).is_terminal is False


def test_terminal_statuses() -> None:
    assert {str(s) for s in TERMINAL_STATUSES} == {"completed", "failed", "cancelled", "dead"}
    for status in TaskStatus:
        assert is_terminal(status) == (status in TERMINAL_STATUSES)
        assert is_terminal(status.value) == (status in TERMINAL_STATUSES)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_states_have_no_exits(terminal: TaskStatus) -> None:
    assert ALLOWED_TRANSITIONS[terminal] == frozenset()
    for target in TaskStatus:
        assert not can_transition(terminal, target)
        with pytest.raises(InvalidTransition):
            Task(target_agent="calc", status=terminal).with_status(target)


def test_every_non_terminal_state_can_reach_a_terminal_state() -> None:
    for status in TaskStatus:
        if not is_terminal(status):
            assert ALLOWED_TRANSITIONS[status] & TERMINAL_STATUSES, status


def test_can_transition_matches_the_table_for_every_pair() -> None:
    for current in TaskStatus:
        for new in TaskStatus:
            expected = new.value in EXPECTED_TABLE[current.value]
            assert can_transition(current, new) is expected
            assert can_transition(current.value, new.value) is expected


def test_input_required_is_a_non_terminal_status_named_as_in_a2a() -> None:
    assert TaskStatus.INPUT_REQUIRED.value == "input_required"
    assert not is_terminal(TaskStatus.INPUT_REQUIRED)
    assert Task(target_agent="calc", status=TaskStatus.INPUT_REQUIRED).is_terminal is False


@pytest.mark.parametrize("current", [TaskStatus.RUNNING, TaskStatus.DISPATCHED])
def test_a_held_task_can_stop_for_approval(current: TaskStatus) -> None:
    task = Task(task_id="t-1", target_agent="calc", status=current, instance_id="w-1", attempt=1)
    waiting = task.with_status(TaskStatus.INPUT_REQUIRED, instance_id=None)
    assert waiting.status is TaskStatus.INPUT_REQUIRED and waiting.instance_id is None


@pytest.mark.parametrize(
    "current", [TaskStatus.PENDING, TaskStatus.INPUT_REQUIRED, *sorted(TERMINAL_STATUSES)]
)
def test_only_a_held_task_can_stop_for_approval(current: TaskStatus) -> None:
    assert not can_transition(current, TaskStatus.INPUT_REQUIRED)
    with pytest.raises(InvalidTransition):
        Task(target_agent="calc", status=current).with_status(TaskStatus.INPUT_REQUIRED)


@pytest.mark.parametrize(
    "new", [TaskStatus.PENDING, TaskStatus.CANCELLED, TaskStatus.DEAD, TaskStatus.FAILED]
)
def test_a_waiting_task_is_resumed_cancelled_or_ended(new: TaskStatus) -> None:
    task = Task(target_agent="calc", status=TaskStatus.INPUT_REQUIRED)
    assert task.with_status(new).status is new


@pytest.mark.parametrize(
    "new", [TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.DISPATCHED, TaskStatus.INPUT_REQUIRED]
)
def test_a_waiting_task_does_not_run_or_complete_without_going_back_to_the_queue(new: TaskStatus) -> None:
    task = Task(task_id="t-1", target_agent="calc", status=TaskStatus.INPUT_REQUIRED)
    assert not can_transition(TaskStatus.INPUT_REQUIRED, new)
    with pytest.raises(InvalidTransition) as exc_info:
        task.with_status(new)
    assert "'input_required'" in str(exc_info.value)


def test_can_transition_with_unknown_strings_is_false() -> None:
    assert can_transition("pending", "teleported") is False
    assert can_transition("limbo", "pending") is False


def test_with_status_moves_and_leaves_the_original_alone() -> None:
    old_time = datetime(2025, 1, 1, tzinfo=UTC)
    task = Task(target_agent="calc", created_at=old_time, updated_at=old_time)
    moved = task.with_status(TaskStatus.DISPATCHED, instance_id="worker-1", attempt=1)
    assert moved.status is TaskStatus.DISPATCHED
    assert moved.instance_id == "worker-1" and moved.attempt == 1
    assert moved.updated_at > old_time
    assert moved.created_at == old_time
    assert moved.task_id == task.task_id
    assert task.status is TaskStatus.PENDING and task.instance_id is None and task.updated_at == old_time

    done = moved.with_status(TaskStatus.RUNNING).with_status(TaskStatus.COMPLETED, result={"v": 42})
    assert done.status is TaskStatus.COMPLETED and done.result == {"v": 42}


def test_with_status_accepts_an_explicit_updated_at() -> None:
    at = datetime(2030, 5, 5, tzinfo=UTC)
    assert Task(target_agent="calc").with_status(TaskStatus.DEAD, updated_at=at).updated_at == at


def test_with_status_names_both_states_when_refusing() -> None:
    task = Task(task_id="t-1", target_agent="calc")
    with pytest.raises(InvalidTransition) as exc_info:
        task.with_status(TaskStatus.COMPLETED)
    message = str(exc_info.value)
    assert "'pending'" in message and "'completed'" in message and "t-1" in message
    assert isinstance(exc_info.value, ValueError)


def test_with_status_validates_changes() -> None:
    task = Task(target_agent="calc")
    with pytest.raises(TypeError):
        task.with_status(TaskStatus.DISPATCHED, no_such_field=1)
    with pytest.raises(ValidationError):
        task.with_status(TaskStatus.DISPATCHED, attempt=-5)
    with pytest.raises(ValidationError):
        task.with_status(TaskStatus.DISPATCHED, instance_id="bad.instance")


# ---------------------------------------------------------------- lifecycle messages


def test_status_changed_from_task_copies_the_task() -> None:
    task = Task(
        task_id="t-9",
        target_agent="calc",
        attempt=2,
        instance_id="w-1",
        status=TaskStatus.FAILED,
        error="boom",
        parent_task_id="t-1",
        session_id="s",
        trace=TraceContext(traceparent=TRACEPARENT),
    )
    change = TaskStatusChanged.from_task(task)
    assert change.task_id == "t-9" and change.target_agent == "calc"
    assert change.status is TaskStatus.FAILED and change.error == "boom"
    assert change.attempt == 2 and change.instance_id == "w-1"
    assert change.parent_task_id == "t-1" and change.session_id == "s"
    assert change.at == task.updated_at
    assert change.trace.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_messages_are_frozen() -> None:
    change = TaskStatusChanged(task_id="t", target_agent="calc", status=TaskStatus.RUNNING)
    with pytest.raises(ValidationError):
        change.status = TaskStatus.COMPLETED  # type: ignore[misc]
    cancel = TaskCancelRequested(task_id="t")
    assert cancel.reason == "cancelled by user"
    with pytest.raises(ValidationError):
        cancel.reason = "x"  # type: ignore[misc]


def test_dead_lettered_carries_the_task() -> None:
    task = Task(target_agent="calc", status=TaskStatus.DEAD)
    dead = TaskDeadLettered(task=task, reason="no instance after 5 attempts")
    again = TaskDeadLettered.from_json(dead.to_json())
    assert again.task == task and again.reason == dead.reason
    with pytest.raises(ValidationError) as exc_info:
        TaskDeadLettered.model_validate({"task": {"taskId": "x"}, "reason": "r"})
    assert _reason(exc_info) == "field 'task.targetAgent': Field required"


def test_rejected_message_decodes_bytes_with_replacement() -> None:
    rejected = RejectedMessage(subject="loom.task.submitted.calc", reason="bad json", raw=b"{\xff oops")
    assert rejected.raw == "{\ufffd oops"
    assert rejected.truncated is False


def test_rejected_message_truncates_to_64_kib() -> None:
    raw = ("é" * 40_000).encode()  # 80 000 bytes, 2-byte characters
    rejected = RejectedMessage(subject="s", reason="r", raw=raw)
    assert rejected.truncated is True
    encoded = rejected.raw.encode()
    assert len(encoded) <= RejectedMessage.MAX_RAW_BYTES == 65_536
    assert len(encoded) >= 65_536 - 3
    assert set(rejected.raw) == {"é"}  # no broken character at the cut
    again = RejectedMessage.from_json(rejected.to_json())
    assert again == rejected


def test_rejected_message_keeps_short_text() -> None:
    rejected = RejectedMessage(subject="s", reason="r", raw="x" * 65_536)
    assert rejected.raw == "x" * 65_536 and rejected.truncated is False
    longer = RejectedMessage(subject="s", reason="r", raw="x" * 65_537)
    assert longer.raw == "x" * 65_536 and longer.truncated is True


def test_cancel_and_status_times_are_aware() -> None:
    cancel = TaskCancelRequested(task_id="t")
    assert cancel.at.utcoffset() == timedelta(0)
