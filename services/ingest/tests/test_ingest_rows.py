"""Decoding JetStream messages into rows: events, task and membership messages, dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from loom_ingest.rows import (
    DEAD_LETTER_COLUMNS,
    EVENT_COLUMNS,
    MAX_ATTRIBUTE_CHARS,
    TASK_COLUMNS,
    Incoming,
    decode,
)
from loom_protocol import (
    ApprovalDecision,
    ApprovalRequest,
    MemberChanged,
    MembershipChange,
    RejectedMessage,
    Task,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatus,
    TaskStatusChanged,
    TraceContext,
    new_event,
)

NOW = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
LIMIT = 1_048_576


def inc(
    subject: str, data: bytes, *, stream: str = "LOOM_EVENTS", seq: int = 7, msg_id: str | None = None
) -> Incoming:
    return Incoming(stream=stream, subject=subject, data=data, stream_seq=seq, timestamp=NOW, msg_id=msg_id)


def as_event(row: tuple[object, ...]) -> dict[str, object]:
    assert len(row) == len(EVENT_COLUMNS)
    return dict(zip(EVENT_COLUMNS, row, strict=True))


def as_dead(row: tuple[object, ...]) -> dict[str, object]:
    assert len(row) == len(DEAD_LETTER_COLUMNS)
    return dict(zip(DEAD_LETTER_COLUMNS, row, strict=True))


def as_task(row: tuple[object, ...]) -> dict[str, object]:
    assert len(row) == len(TASK_COLUMNS)
    return dict(zip(TASK_COLUMNS, row, strict=True))


def test_an_llm_usage_event_fills_every_column() -> None:
    event = new_event(
        "llm.usage",
        "/workers/w1/agents/calc",
        data={"input_tokens": 12, "output_tokens": 3, "cost_usd": 0.5, "latency_s": 0.25, "model": "m"},
        subject="llm:p/m",
        task_id="t1",
        session_id="s1",
        parent_task_id="p1",
        traceparent=TRACEPARENT,
        instance_id="w1",
        agent_id="calc",
        time=NOW - timedelta(seconds=1),
        extensions={"seq": 4},
    )
    decoded = decode(inc("loom.event.worker.w1.llm.usage", event.to_json()), LIMIT)
    assert decoded.dead is None and decoded.task is None
    row = as_event(decoded.event)  # type: ignore[arg-type]
    assert row.pop("raw") == event.to_json().decode()  # the database splits it into data and attributes
    assert row == {
        "time": NOW - timedelta(seconds=1),
        "id": event.id,
        "kind": "event",
        "type": "llm.usage",
        "source": "/workers/w1/agents/calc",
        "subject": "llm:p/m",
        "trace_id": "ab" * 16,
        "task_id": "t1",
        "session_id": "s1",
        "parent_task_id": "p1",
        "node_id": "calc",
        "agent_id": "calc",
        "instance_id": "w1",
        "seq": 4,
        "input_tokens": 12,
        "output_tokens": 3,
        "cost_usd": 0.5,
        "latency_s": 0.25,
        "stream_seq": 7,
    }


def test_node_id_falls_back_to_source_and_time_to_jetstream() -> None:
    raw = json.dumps({"id": "e1", "source": "/svc", "specversion": "1.0", "type": "x", "seq": "3"}).encode()
    row = as_event(decode(inc("loom.event.worker.w1.x", raw), LIMIT).event)  # type: ignore[arg-type]
    assert row["node_id"] == "/svc" and row["agent_id"] is None
    assert row["time"] == NOW
    assert row["seq"] is None  # only an integer seq orders events


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"input_tokens": True, "output_tokens": -1, "cost_usd": "1", "latency_s": float("nan")},
            (None,) * 4,
        ),
        ({"input_tokens": 2**70, "latency_s": -0.5}, (None,) * 4),
        ("not a dict", (None,) * 4),
    ],
)
def test_bad_usage_numbers_are_left_out_not_fatal(data: object, expected: tuple[object, ...]) -> None:
    event = new_event("llm.usage", "/w", data=data)
    row = as_event(decode(inc("loom.event.worker.w1.llm.usage", event.to_json()), LIMIT).event)  # type: ignore[arg-type]
    assert (row["input_tokens"], row["output_tokens"], row["cost_usd"], row["latency_s"]) == expected


def test_tool_result_latency_comes_from_duration_ms() -> None:
    event = new_event("tool.result", "/w", data={"duration_ms": 1500})
    row = as_event(decode(inc("loom.event.worker.w1.tool.result", event.to_json()), LIMIT).event)  # type: ignore[arg-type]
    assert row["latency_s"] == 1.5


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\x00garbage", "not valid JSON"),
        (b"[1]", "not a valid CloudEvent"),
        (b'{"id": "x"}', "not a valid CloudEvent: field 'source': Field required"),
        (
            json.dumps(
                {"id": "x", "source": "/s", "specversion": "1.0", "type": "t" * (MAX_ATTRIBUTE_CHARS + 1)}
            ).encode(),
            f"attribute 'type' is {MAX_ATTRIBUTE_CHARS + 1} characters",
        ),
    ],
)
def test_malformed_events_become_dead_letters(payload: bytes, reason: str) -> None:
    decoded = decode(inc("loom.event.worker.w1.x", payload, seq=9), LIMIT)
    assert decoded.event is None
    dead = as_dead(decoded.dead)  # type: ignore[arg-type]
    assert str(dead["reason"]).startswith(reason), dead["reason"]
    assert dead["raw"] == payload
    assert (dead["time"], dead["stream"], dead["stream_seq"], dead["subject"]) == (
        NOW,
        "LOOM_EVENTS",
        9,
        "loom.event.worker.w1.x",
    )
    assert dead["rejected_by"] == "ingest"


def test_an_event_without_an_instance_is_stored_as_the_instance_its_subject_names() -> None:
    event = new_event("agent.thought", "/workers/w1/agents/calc", data={"content": "hm"}, task_id="t1")
    row = as_event(decode(inc("loom.event.worker.w1.agent.thought", event.to_json()), LIMIT).event)  # type: ignore[arg-type]
    assert row["instance_id"] == "w1"


def test_a_service_event_may_name_any_instance() -> None:
    event = new_event("task.completed", "/dispatcher", task_id="t1", instance_id="w7")
    row = as_event(decode(inc("loom.event.dispatcher.task.completed", event.to_json()), LIMIT).event)  # type: ignore[arg-type]
    assert (row["type"], row["instance_id"]) == ("task.completed", "w7")


@pytest.mark.parametrize(
    ("subject", "event_type", "instance", "reason"),
    [
        (
            "loom.event.worker.w1.llm.usage",
            "llm.usage",
            "w2",
            "an event on loom.event.worker.w1.llm.usage must name instance 'w1', its sender, not 'w2'",
        ),
        (
            "loom.event.worker.w1.agent.thought",
            "llm.usage",
            "w1",
            "an event on loom.event.worker.w1.agent.thought must be of type 'agent.thought', not 'llm.usage'",
        ),
        ("loom.event.llm.usage", "llm.usage", None, "'loom.event.llm.usage' is not an event subject"),
        ("loom.event.query.x", "x", None, "'loom.event.query.x' is not an event subject"),
    ],
)
def test_an_event_from_another_sender_than_its_subject_names_is_a_dead_letter(
    subject: str, event_type: str, instance: str | None, reason: str
) -> None:
    event = new_event(event_type, "/workers/w2", instance_id=instance, task_id="t1")
    decoded = decode(inc(subject, event.to_json()), LIMIT)
    assert decoded.event is None
    dead = as_dead(decoded.dead)  # type: ignore[arg-type]
    assert str(dead["reason"]).startswith(reason), dead["reason"]
    assert (dead["subject"], dead["raw"]) == (subject, event.to_json())


def test_oversize_is_checked_before_parsing() -> None:
    dead = as_dead(decode(inc("loom.event.worker.w1.x", b"x" * 101), 100).dead)  # type: ignore[arg-type]
    assert dead["reason"] == "message is 101 bytes, over the limit of 100 bytes"


def test_unexpected_subjects_are_dead_lettered() -> None:
    dead = as_dead(decode(inc("other.thing", b"{}"), LIMIT).dead)  # type: ignore[arg-type]
    assert "does not store" in str(dead["reason"])


def _task() -> Task:
    return Task(
        task_id="t-9",
        target_agent="calc",
        parameters={"prompt": "1+1"},
        session_id="s",
        trace=TraceContext(traceparent=TRACEPARENT),
    )


def test_a_submitted_task_becomes_a_bus_row_and_a_task_update() -> None:
    task = _task()
    decoded = decode(
        inc("loom.task.submitted.calc", task.to_json(), stream="LOOM_TASKS", msg_id="submitted:t-9"), LIMIT
    )
    row = as_event(decoded.event)  # type: ignore[arg-type]
    assert (row["id"], row["kind"], row["type"], row["source"]) == (
        "submitted:t-9",
        "task",
        "loom.task.submitted",
        "/nats/LOOM_TASKS",
    )
    assert (row["subject"], row["task_id"], row["node_id"], row["trace_id"]) == (
        "loom.task.submitted.calc",
        "t-9",
        "calc",
        "ab" * 16,
    )
    stored = json.loads(str(row["raw"]))
    assert stored["data"] == json.loads(task.to_json())
    assert stored["type"] == "loom.task.submitted" and stored["traceid"] == "ab" * 16
    update = as_task(decoded.task)  # type: ignore[arg-type]
    assert update["status"] == "pending" and update["final"] is False
    assert json.loads(str(update["parameters"])) == {"prompt": "1+1"}
    assert update["created_at"] == task.created_at


def test_a_bus_row_never_carries_a_number_postgresql_refuses() -> None:
    body = json.loads(_task().to_json())
    body["parameters"] = {"prompt": "NaN and Infinity", "x": "__nan__", "y": ["__inf__", 1.5]}
    text = json.dumps(body).replace('"__nan__"', "NaN").replace('"__inf__"', "-Infinity")
    decoded = decode(inc("loom.task.submitted.calc", text.encode(), stream="LOOM_TASKS"), LIMIT)

    def refuse(literal: str) -> None:
        raise AssertionError(f"{literal} in the stored JSON")

    stored = json.loads(str(as_event(decoded.event)["raw"]), parse_constant=refuse)  # type: ignore[arg-type]
    assert stored["data"]["parameters"] == {"prompt": "NaN and Infinity", "x": None, "y": [None, 1.5]}


def test_status_messages_carry_final_and_result() -> None:
    change = TaskStatusChanged.from_task(
        _task().with_status(TaskStatus.DISPATCHED).with_status(TaskStatus.COMPLETED, result={"answer": "2"})
    ).model_copy(update={"final": True})
    decoded = decode(inc("loom.task.status.t-9", change.to_json(), stream="LOOM_TASKS", seq=12), LIMIT)
    row = as_event(decoded.event)  # type: ignore[arg-type]
    assert row["type"] == "loom.task.status.completed"
    assert row["id"] == "LOOM_TASKS:12"  # no Nats-Msg-Id: the stream position names it
    assert row["time"] == change.at
    update = as_task(decoded.task)  # type: ignore[arg-type]
    assert (update["status"], update["final"], json.loads(str(update["result"]))) == (
        "completed",
        True,
        {"answer": "2"},
    )


def test_a_workers_report_is_stored_as_an_event_and_changes_no_task_row() -> None:
    change = TaskStatusChanged.from_task(
        _task().with_status(TaskStatus.DISPATCHED).with_status(TaskStatus.COMPLETED, result={"answer": "2"}),
        instance_id="w1",
    )
    decoded = decode(inc("loom.task.report.w1.t-9", change.to_json(), stream="LOOM_TASKS", seq=3), LIMIT)
    assert decoded.task is None and decoded.dead is None
    row = as_event(decoded.event)  # type: ignore[arg-type]
    assert row["type"] == "loom.task.report.completed" and row["id"] == "LOOM_TASKS:3"
    assert json.loads(str(row["raw"]))["data"]["instanceId"] == "w1"
    malformed = decode(inc("loom.task.report.w1", change.to_json(), stream="LOOM_TASKS"), LIMIT)
    assert malformed.dead is not None and malformed.event is None


def test_dead_and_cancel_messages() -> None:
    dead = TaskDeadLettered(task=_task().with_status(TaskStatus.DEAD), reason="no instance")
    update = as_task(decode(inc("loom.task.dead.calc", dead.to_json(), stream="LOOM_TASKS"), LIMIT).task)  # type: ignore[arg-type]
    assert (update["status"], update["final"], update["error"]) == ("dead", True, "no instance")
    cancel = TaskCancelRequested(task_id="t-9")
    decoded = decode(inc("loom.task.cancel.t-9", cancel.to_json(), stream="LOOM_TASKS"), LIMIT)
    update = as_task(decoded.task)  # type: ignore[arg-type]
    assert update["status"] is None and update["cancel_requested_at"] == cancel.at
    assert update["created_at"] == cancel.at  # every row has a creation time
    assert as_event(decoded.event)["type"] == "loom.task.cancel"  # type: ignore[arg-type]


def test_a_cancel_request_is_stored_as_an_event_and_changes_no_task() -> None:
    request = TaskCancelRequested(task_id="t-9", reason="parent t-1 stopped waiting")
    decoded = decode(inc("loom.task.cancelrequest.t-9", request.to_json(), stream="LOOM_TASKS"), LIMIT)
    assert decoded.dead is None and decoded.task is None
    event = as_event(decoded.event)  # type: ignore[arg-type]
    assert (event["type"], event["task_id"]) == ("loom.task.cancelrequest", "t-9")


def task_update(subject: str, body: bytes) -> dict[str, object]:
    decoded = decode(inc(subject, body, stream="LOOM_TASKS"), LIMIT)
    assert decoded.task is not None
    return as_task(decoded.task)


def test_input_required_lands_with_the_call_it_waits_on() -> None:
    request = ApprovalRequest(key="1.0", tool="shell", arguments={"cmd": "ls"}, requested_at=NOW)
    task = _task().with_status(TaskStatus.DISPATCHED).with_status(TaskStatus.INPUT_REQUIRED)
    change = TaskStatusChanged.from_task(task, at=NOW, approval=request)
    decoded = decode(inc("loom.task.status.t-9", change.to_json(), stream="LOOM_TASKS"), LIMIT)
    assert as_event(decoded.event)["type"] == "loom.task.status.input_required"  # type: ignore[arg-type]
    update = task_update("loom.task.status.t-9", change.to_json())
    assert update["status"] == "input_required" and update["created_at"] == NOW
    assert json.loads(str(update["pending_approval"])) == request.to_wire()
    assert update["approvals"] is None  # a status message does not carry the decisions
    # decided: back to pending through the normal status flow; the call is no longer waited on
    resumed = TaskStatusChanged.from_task(task.with_status(TaskStatus.PENDING), at=NOW, approval=request)
    update = task_update("loom.task.status.t-9", resumed.to_json())
    assert update["status"] == "pending" and update["pending_approval"] is None


def test_task_messages_carry_the_approvals_taken() -> None:
    decision = ApprovalDecision(key="1.0", tool="shell", approved=False, by="ann", decided_at=NOW)
    task = _task().model_copy(update={"approvals": [decision]})
    update = task_update("loom.task.assigned.w-1", task.to_json())
    assert json.loads(str(update["approvals"])) == [decision.to_wire()]
    assert update["pending_approval"] is None
    assert task_update("loom.task.submitted.calc", _task().to_json())["approvals"] == "[]"


@pytest.mark.parametrize(
    ("subject", "payload", "reason"),
    [
        ("loom.task.status.t", b"nope", "not valid JSON"),
        ("loom.task.status.t", b'{"taskId": "t"}', "not a valid task status message"),
        ("loom.task.weird.t", b"{}", "unknown task subject"),
        ("loom.task.status", b"{}", "unknown task subject"),
    ],
)
def test_bad_task_messages_are_dead_lettered(subject: str, payload: bytes, reason: str) -> None:
    dead = as_dead(decode(inc(subject, payload, stream="LOOM_TASKS"), LIMIT).dead)  # type: ignore[arg-type]
    assert str(dead["reason"]).startswith(reason)


def test_membership_rows_belong_to_the_instance() -> None:
    change = MemberChanged(
        instance_id="w-3", change=MembershipChange.DOWN, agents=["calc"], reason="missed 3"
    )
    row = as_event(
        decode(inc("loom.registry.member.down", change.to_json(), stream="LOOM_REGISTRY"), LIMIT).event
    )  # type: ignore[arg-type]
    assert (row["kind"], row["type"], row["node_id"], row["instance_id"]) == (
        "member",
        "loom.registry.member.down",
        "w-3",
        "w-3",
    )


def test_rejected_records_keep_the_rejecting_service_and_reason() -> None:
    record = RejectedMessage(subject="loom.task.submitted.x", reason="bad", raw=b"\xffraw")
    dead = as_dead(
        decode(inc("loom.rejected.dispatcher", record.to_json(), stream="LOOM_REJECTED"), LIMIT).dead
    )  # type: ignore[arg-type]
    assert (dead["subject"], dead["reason"], dead["rejected_by"]) == (
        "loom.task.submitted.x",
        "bad",
        "dispatcher",
    )
    assert dead["raw"] == "\ufffdraw".encode()
    assert dead["rejected_at"] == record.at
    bad = as_dead(decode(inc("loom.rejected.worker", b'{"x": 1}', stream="LOOM_REJECTED"), LIMIT).dead)  # type: ignore[arg-type]
    assert str(bad["reason"]).startswith("not a valid RejectedMessage") and bad["rejected_by"] == "ingest"
