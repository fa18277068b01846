"""Stream specs and the Nats-Msg-Id rule."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from loom_protocol import (
    ALL_STREAMS,
    EVENTS_STREAM,
    MAX_EVENT_BYTES,
    MSG_ID_HEADER,
    REGISTRY_STREAM,
    REJECTED_STREAM,
    TASKS_STREAM,
    MembershipChange,
    StreamSpec,
    TaskStatus,
    assigned_msg_id,
    cancel_msg_id,
    cancel_request_msg_id,
    dead_msg_id,
    event_msg_id,
    member_msg_id,
    new_event,
    status_msg_id,
    subjects,
    submitted_msg_id,
)
from pydantic import ValidationError

WEEK_S = 7 * 24 * 3600


def test_streams_are_pinned() -> None:
    assert [(s.name, s.subjects, s.retention, s.max_age_s, s.duplicate_window_s) for s in ALL_STREAMS] == [
        ("LOOM_TASKS", ("loom.task.>",), "limits", WEEK_S, 120),
        ("LOOM_EVENTS", ("loom.event.>",), "limits", WEEK_S, 120),
        ("LOOM_REGISTRY", ("loom.registry.member.>",), "limits", WEEK_S, 120),
        ("LOOM_REJECTED", ("loom.rejected.>",), "limits", WEEK_S, 120),
    ]
    assert ALL_STREAMS == (TASKS_STREAM, EVENTS_STREAM, REGISTRY_STREAM, REJECTED_STREAM)
    assert all(s.storage == "file" and s.max_msg_size == MAX_EVENT_BYTES for s in ALL_STREAMS)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def test_every_persisted_subject_lands_in_exactly_one_stream_and_core_ones_in_none() -> None:
    persisted = [
        subjects.task_submitted("calc"),
        subjects.task_assigned("w1"),
        subjects.task_status("t1"),
        subjects.task_cancel("t1"),
        subjects.task_cancel_request("t1"),
        subjects.task_dead("calc"),
        subjects.instance_event("w1", "agent.thought"),
        subjects.service_event("dispatcher", "task.submitted"),
        subjects.service_event("ingest", "agent.thought"),
        subjects.REGISTRY_MEMBER_UP,
        subjects.REGISTRY_MEMBER_DOWN,
        subjects.rejected("dispatcher"),
    ]
    for subject in persisted:
        owners = [s.name for s in ALL_STREAMS for p in s.subjects if _matches(p, subject)]
        assert len(owners) == 1, (subject, owners)
    for subject in (subjects.registry_heartbeat("w1"), subjects.REGISTRY_PICK, subjects.REGISTRY_AGENTS):
        assert not any(_matches(p, subject) for s in ALL_STREAMS for p in s.subjects), subject


def test_stream_spec_is_frozen_and_validated() -> None:
    with pytest.raises(ValidationError):
        TASKS_STREAM.max_age_s = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="may not exceed max_age_s"):
        StreamSpec(name="X", subjects=("x.>",), retention="limits", max_age_s=60, duplicate_window_s=120)
    with pytest.raises(ValidationError):
        StreamSpec(name="bad.name", subjects=("x.>",), retention="limits", max_age_s=60, duplicate_window_s=1)
    with pytest.raises(ValidationError):
        StreamSpec(name="X", subjects=(), retention="limits", max_age_s=60, duplicate_window_s=1)
    with pytest.raises(ValidationError):
        StreamSpec(name="X", subjects=("x",), retention="forever", max_age_s=60, duplicate_window_s=1)  # type: ignore[arg-type]


def test_msg_id_header() -> None:
    assert MSG_ID_HEADER == "Nats-Msg-Id"


def test_msg_ids_name_the_fact() -> None:
    assert submitted_msg_id("t1") == "submitted:t1"
    assert assigned_msg_id("t1", 2) == "assigned:t1:2"
    assert status_msg_id("t1", 2, TaskStatus.RUNNING) == "status:t1:2:running"
    assert status_msg_id("t1", 2, "completed") == "status:t1:2:completed"
    assert cancel_msg_id("t1") == "cancel:t1"
    assert cancel_request_msg_id("t1") == "cancelrequest:t1"
    assert cancel_request_msg_id("run:1") == "cancelrequest:run:1"
    assert dead_msg_id("t1") == "dead:t1"
    event = new_event("agent.thought", "src")
    assert event_msg_id(event.id) == event.id


def test_same_fact_same_id_different_fact_different_id() -> None:
    assert assigned_msg_id("t1", 1) == assigned_msg_id("t1", 1)
    ids = {
        submitted_msg_id("t1"),
        assigned_msg_id("t1", 1),
        assigned_msg_id("t1", 2),
        status_msg_id("t1", 1, "running"),
        status_msg_id("t1", 2, "running"),
        status_msg_id("t1", 1, "pending"),
        cancel_msg_id("t1"),
        cancel_request_msg_id("t1"),
        dead_msg_id("t1"),
        submitted_msg_id("t2"),
    }
    assert len(ids) == 10


def test_member_msg_id_normalises_time_to_utc() -> None:
    at = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    same_moment = at.astimezone(timezone(timedelta(hours=8)))
    expected = "member:w-1:up:2025-01-01T12:00:00.000000+00:00"
    assert member_msg_id("w-1", MembershipChange.UP, at) == expected
    assert member_msg_id("w-1", "up", same_moment) == expected
    assert member_msg_id("w-1", "down", at) != expected
    assert member_msg_id("w-1", "up", at + timedelta(microseconds=1)) != expected


def test_msg_id_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        member_msg_id("w-1", "up", datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        member_msg_id("w-1", "sideways", datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError):
        status_msg_id("t1", 1, "exploded")
    with pytest.raises(ValueError):
        assigned_msg_id("t1", -1)
    with pytest.raises(ValueError):
        submitted_msg_id("")
    with pytest.raises(ValueError):
        dead_msg_id("a b")
    with pytest.raises(ValueError):
        cancel_request_msg_id("")
    with pytest.raises(ValueError):
        cancel_request_msg_id("a b")
    with pytest.raises(ValueError):
        event_msg_id("")


def test_stream_create_request_is_the_jetstream_api_call_with_the_stream_config() -> None:
    import json

    from loom_protocol import stream_config, stream_create_request

    subject, body = stream_create_request(TASKS_STREAM)
    assert subject == "$JS.API.STREAM.CREATE.LOOM_TASKS"
    assert json.loads(body) == stream_config(TASKS_STREAM)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b'{"type": "io.nats.jetstream.api.v1.stream_create_response", "config": {}}', None),
        (
            b'{"error": {"code": 400, "err_code": 10058, '
            b'"description": "stream name already in use with a different configuration"}}',
            "stream name already in use with a different configuration (10058)",
        ),
        (b'{"error": {"code": 503, "description": "JetStream not enabled"}}', "JetStream not enabled (503)"),
        (b"not json", "not a JetStream API reply: b'not json'"),
    ],
)
def test_stream_create_error_reads_the_servers_reply(reply: bytes, error: str | None) -> None:
    from loom_protocol import stream_create_error

    assert stream_create_error(reply) == error


def test_streams_get_the_replica_count_and_refuse_an_impossible_one() -> None:
    import json

    import pytest
    from loom_protocol.jetstream import stream_config, stream_create_request

    assert stream_config(TASKS_STREAM)["num_replicas"] == 1
    _, body = stream_create_request(TASKS_STREAM, 3)
    assert json.loads(body)["num_replicas"] == 3
    for bad in (0, 6, True):
        with pytest.raises(ValueError):
            stream_config(TASKS_STREAM, bad)


def test_the_nats_url_setting_names_one_server_or_several() -> None:
    import pytest
    from loom_protocol.settings import nats_servers

    assert nats_servers("nats://a:4222") == ["nats://a:4222"]
    assert nats_servers(" nats://u:p@a:1, nats://u:p@b:2 ,nats://u:p@c:3") == [
        "nats://u:p@a:1",
        "nats://u:p@b:2",
        "nats://u:p@c:3",
    ]
    with pytest.raises(ValueError):
        nats_servers(" , ")


def test_direct_gets_are_turned_on_for_a_stream_made_without_them_and_nothing_else_changes() -> None:
    import json

    from loom_protocol.jetstream import stream_config, stream_direct_update

    theirs = {**stream_config(TASKS_STREAM), "allow_direct": False, "max_age": 42, "description": "kept"}
    subject, body = stream_direct_update(TASKS_STREAM, json.dumps({"config": theirs}).encode()) or ("", b"")
    assert subject == "$JS.API.STREAM.UPDATE.LOOM_TASKS"
    assert json.loads(body) == {**theirs, "allow_direct": True}  # the operator's max_age stays
    on = json.dumps({"config": {**theirs, "allow_direct": True}}).encode()
    assert stream_direct_update(TASKS_STREAM, on) is None
    assert stream_direct_update(EVENTS_STREAM, json.dumps({"config": theirs}).encode()) is None
    assert stream_direct_update(TASKS_STREAM, b'{"error": {"code": 404}}') is None
    assert stream_direct_update(TASKS_STREAM, b"not json") is None
    other = json.dumps({"config": {**theirs, "name": "OTHER"}}).encode()
    assert stream_direct_update(TASKS_STREAM, other) is None
