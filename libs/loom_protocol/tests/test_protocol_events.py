"""CloudEvents envelope, Loom's event types, batches and validation reasons."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from loom_protocol import (
    MAX_EVENT_BYTES,
    BatchError,
    CloudEvent,
    EventBatch,
    EventBatchAck,
    EventType,
    Heartbeat,
    new_event,
    validation_reason,
)
from loom_protocol.events import ALL_EVENT_TYPES
from pydantic import ValidationError

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def minimal(**extra: Any) -> dict[str, Any]:
    return {
        "id": "e-1",
        "source": "loom://agent-worker/w-1",
        "specversion": "1.0",
        "type": "agent.thought",
        **extra,
    }


def reason_of(payload: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as exc_info:
        CloudEvent.model_validate(payload)
    return validation_reason(exc_info.value)


# ---------------------------------------------------------------- event types


def test_event_types_are_pinned() -> None:
    assert ALL_EVENT_TYPES == {
        "task.submitted",
        "task.assigned",
        "task.started",
        "task.resumed",
        "approval.requested",
        "approval.granted",
        "approval.denied",
        "task.completed",
        "task.failed",
        "task.cancelled",
        "task.dead",
        "task.retried",
        "agent.thought",
        "agent.action",
        "agent.answer",
        "tool.call",
        "tool.result",
        "llm.request",
        "llm.usage",
        "memory.add",
        "memory.consolidate",
        "registry.member.up",
        "registry.member.down",
        "error",
    }
    assert {member.value for member in EventType} == ALL_EVENT_TYPES
    assert all(type(name) is str for name in ALL_EVENT_TYPES)
    assert EventType.AGENT_THOUGHT == "agent.thought"


# ---------------------------------------------------------------- valid events


def test_minimal_event_and_spec_names_on_the_wire() -> None:
    event = CloudEvent.model_validate(minimal(datacontenttype="text/plain", dataschema="https://x/s.json"))
    wire = event.to_wire()
    assert wire == {
        "id": "e-1",
        "source": "loom://agent-worker/w-1",
        "specversion": "1.0",
        "type": "agent.thought",
        "datacontenttype": "text/plain",
        "dataschema": "https://x/s.json",
    }


def test_spec_example_event_is_accepted_with_its_extension() -> None:
    # The JSON example of the CloudEvents 1.0 JSON format spec.
    raw = json.dumps(
        {
            "specversion": "1.0",
            "type": "com.example.someevent",
            "source": "/mycontext",
            "subject": None,
            "id": "C234-1234-1234",
            "time": "2018-04-05T17:31:00Z",
            "comexampleextension1": "value",
            "comexampleothervalue": 5,
            "datacontenttype": "application/json",
            "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True},
        }
    )
    event = CloudEvent.from_json(raw)
    assert event.time == datetime(2018, 4, 5, 17, 31, tzinfo=UTC)
    assert event.extensions == {"comexampleextension1": "value", "comexampleothervalue": 5}
    wire = event.to_wire()
    assert wire["comexampleextension1"] == "value" and wire["comexampleothervalue"] == 5
    assert "subject" not in wire  # null attributes are absent
    assert CloudEvent.from_json(event.to_json()) == event


def test_time_is_serialised_as_rfc3339() -> None:
    at = datetime(2025, 3, 1, 12, 30, 15, 250_000, tzinfo=timezone(timedelta(hours=2)))
    wire = CloudEvent.model_validate(minimal(time=at)).to_wire()
    assert wire["time"] == "2025-03-01T12:30:15.250000+02:00"
    assert CloudEvent.model_validate(minimal(time="2025-03-01T10:30:15.25Z")).time == at


def test_traceid_is_derived_from_traceparent() -> None:
    event = CloudEvent.model_validate(minimal(traceparent=TRACEPARENT))
    assert event.traceid == TRACE_ID and event.trace_id == TRACE_ID
    assert event.to_wire()["traceid"] == TRACE_ID
    assert CloudEvent.model_validate(minimal()).trace_id is None


def test_traceid_alone_is_kept() -> None:
    assert CloudEvent.model_validate(minimal(traceid=TRACE_ID)).trace_id == TRACE_ID


def test_extension_with_null_value_is_absent() -> None:
    event = CloudEvent.model_validate(minimal(myext=None))
    assert "myext" not in event.to_wire() and event.extensions == {}


def test_extension_booleans_and_int32_bounds_are_accepted() -> None:
    event = CloudEvent.model_validate(minimal(flag=True, lo=-(2**31), hi=2**31 - 1))
    assert event.extensions == {"flag": True, "lo": -(2**31), "hi": 2**31 - 1}


# ---------------------------------------------------------------- invalid events


@pytest.mark.parametrize("missing", ["id", "source", "specversion", "type"])
def test_required_attributes(missing: str) -> None:
    payload = minimal()
    del payload[missing]
    assert reason_of(payload) == f"field '{missing}': Field required"


@pytest.mark.parametrize("attribute", ["id", "source", "type"])
def test_required_attributes_may_not_be_empty(attribute: str) -> None:
    assert reason_of(minimal(**{attribute: ""})).startswith(
        f"field '{attribute}': String should have at least 1"
    )


def test_source_with_whitespace_is_rejected() -> None:
    assert reason_of(minimal(source="not a uri")).startswith("field 'source': String should match pattern")


def test_specversion_must_be_1_0() -> None:
    assert reason_of(minimal(specversion="0.3")) == "field 'specversion': Input should be '1.0'"


@pytest.mark.parametrize("name", ["Bad-Name", "bad_name", "UPPER", "a" * 21, "with space", "ünï"])
def test_invalid_extension_name_is_rejected_naming_the_attribute_and_rule(name: str) -> None:
    reason = reason_of(minimal(**{name: "x"}))
    assert f"extension attribute {name!r}" in reason
    assert "^[a-z0-9]{1,20}$" in reason


@pytest.mark.parametrize(("value", "kind"), [({"a": 1}, "dict"), ([1, 2], "list"), (1.5, "float")])
def test_extension_value_must_be_string_integer_or_boolean(value: Any, kind: str) -> None:
    reason = reason_of(minimal(myext=value))
    assert reason == (
        f"extension attribute 'myext': value of type {kind} is not allowed; "
        "extension values must be a string, an integer or a boolean"
    )


def test_extension_integer_outside_int32_is_rejected() -> None:
    assert "outside the 32-bit signed range" in reason_of(minimal(big=2**31))


def test_all_bad_extensions_are_reported_together() -> None:
    reason = reason_of(minimal(**{"Bad-Name": "x", "nested": {"a": 1}}))
    assert "'Bad-Name'" in reason and "'nested'" in reason


def test_time_must_be_timezone_aware() -> None:
    assert reason_of(minimal(time="2025-01-01T00:00:00")) == "field 'time': Input should have timezone info"


def test_bad_traceparent_is_rejected() -> None:
    reason = reason_of(minimal(traceparent="00-zz-00f067aa0ba902b7-01"))
    assert reason.startswith("field 'traceparent': invalid traceparent")
    assert "traceid" not in reason  # no knock-on error from a derived traceid


def test_traceid_must_match_traceparent() -> None:
    reason = reason_of(minimal(traceparent=TRACEPARENT, traceid="a" * 32))
    assert "does not match the trace id of traceparent" in reason


@pytest.mark.parametrize("traceid", ["0" * 32, "A" * 32, "abc"])
def test_bad_traceid_is_rejected(traceid: str) -> None:
    assert reason_of(minimal(traceid=traceid)).startswith("field 'traceid': traceid must be 32")


def test_taskid_and_agentid_extensions_are_subject_tokens() -> None:
    assert reason_of(minimal(taskid="a.b")).startswith("field 'taskid'")
    assert reason_of(minimal(agentid="calc.v2")).startswith("field 'agentid'")


def test_data_and_data_base64_are_exclusive() -> None:
    binary = CloudEvent.model_validate(minimal(data_base64="AAEC"))
    assert binary.data_base64 == "AAEC"
    assert binary.to_wire()["data_base64"] == "AAEC"  # the JSON format's member name, not camelCased
    assert "dataBase64" not in binary.to_wire()
    assert "mutually exclusive" in reason_of(minimal(data={"a": 1}, data_base64="AAEC"))


def test_camel_case_is_not_applied_to_cloudevents() -> None:
    event = CloudEvent.model_validate(minimal(datacontenttype="text/plain"))
    assert "dataContentType" not in event.to_wire()
    # A camelCased core attribute is not the core attribute; as an extension name it is invalid.
    assert "'dataContentType'" in reason_of(minimal(dataContentType="text/plain"))


def test_oversize_event_is_rejected_before_parsing() -> None:
    payload = json.dumps(minimal(data="x" * MAX_EVENT_BYTES)).encode()
    assert len(payload) > MAX_EVENT_BYTES
    with pytest.raises(ValidationError) as exc_info:
        CloudEvent.from_json(payload)
    assert validation_reason(exc_info.value) == (
        f"event is {len(payload)} bytes, over the limit of {MAX_EVENT_BYTES} bytes"
    )
    with pytest.raises(ValidationError):
        CloudEvent.from_json(payload.decode())
    # Just under the limit is fine.
    fits = json.dumps(minimal(data="x" * (MAX_EVENT_BYTES - 200))).encode()
    assert len(fits) <= MAX_EVENT_BYTES
    assert CloudEvent.from_json(fits).data == "x" * (MAX_EVENT_BYTES - 200)


def test_invalid_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as exc_info:
        CloudEvent.from_json(b"{not json")
    assert "JSON" in validation_reason(exc_info.value)


def test_events_are_frozen() -> None:
    event = CloudEvent.model_validate(minimal())
    with pytest.raises(ValidationError):
        event.type = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- new_event


def test_new_event_fills_in_loom_extensions() -> None:
    before = datetime.now(UTC)
    event = new_event(
        EventType.TOOL_CALL,
        "loom://agent-worker/w-1",
        data={"tool": "add"},
        subject="add",
        task_id="t-1",
        session_id="s-1",
        parent_task_id="t-0",
        traceparent=TRACEPARENT,
        tracestate="k=v",
        instance_id="w-1",
        agent_id="calc",
    )
    wire = event.to_wire()
    assert wire["type"] == "tool.call" and wire["specversion"] == "1.0"
    assert wire["taskid"] == "t-1" and wire["sessionid"] == "s-1" and wire["parenttaskid"] == "t-0"
    assert wire["instanceid"] == "w-1" and wire["agentid"] == "calc"
    assert wire["traceparent"] == TRACEPARENT and wire["tracestate"] == "k=v" and wire["traceid"] == TRACE_ID
    assert wire["subject"] == "add" and wire["data"] == {"tool": "add"}
    assert event.time is not None and before <= event.time <= datetime.now(UTC)
    assert len(event.id) == 32


def test_new_event_ids_are_unique_and_time_ordered() -> None:
    first = new_event("error", "src")
    ids = [new_event("error", "src").id for _ in range(200)]
    assert len(set(ids)) == 200
    assert all(first.id[:12] <= other[:12] for other in ids)  # 48-bit millisecond prefix
    assert first.id[12] == "7"  # UUID version 7


def test_new_event_explicit_id_and_time() -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    event = new_event("error", "src", id="fixed", time=at)
    assert event.id == "fixed" and event.time == at


def test_new_event_extensions() -> None:
    event = new_event("error", "src", extensions={"studiophase": "pre", "retries": 2})
    assert event.extensions == {"studiophase": "pre", "retries": 2}
    assert event.to_wire()["studiophase"] == "pre"
    with pytest.raises(ValidationError):
        new_event("error", "src", extensions={"Bad-Name": "x"})


@pytest.mark.parametrize("name", sorted(CloudEvent.model_fields))
def test_new_event_refuses_every_field_name_as_an_extension(name: str) -> None:
    loom_extensions = {"traceparent", "tracestate", "taskid", "sessionid", "parenttaskid", "traceid"}
    loom_extensions |= {"instanceid", "agentid"}
    expected = "is a Loom extension" if name in loom_extensions else "reserved by the CloudEvents spec"
    with pytest.raises(ValueError, match=expected):
        new_event("error", "src", extensions={name: "x"})


def test_cloudevent_fields_are_the_spec_attributes_plus_loom_extensions() -> None:
    assert set(CloudEvent.model_fields) == {
        "id",
        "source",
        "specversion",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
        "traceparent",
        "tracestate",
        "taskid",
        "sessionid",
        "parenttaskid",
        "traceid",
        "instanceid",
        "agentid",
    }


def test_new_event_validates() -> None:
    with pytest.raises(ValidationError):
        new_event("", "src")
    with pytest.raises(ValidationError):
        new_event("error", "src", traceparent="nope")


# ---------------------------------------------------------------- batches


def test_event_batch_keeps_events_raw() -> None:
    good = minimal()
    bad = {"id": "x"}
    batch = EventBatch.from_json(json.dumps({"type": "event_batch", "events": [good, bad]}))
    assert batch.events == [good, bad]
    assert batch.to_wire()["type"] == "event_batch"
    with pytest.raises(ValidationError):
        EventBatch.model_validate({"type": "something_else", "events": []})


def test_event_batch_ack() -> None:
    ack = EventBatchAck(
        accepted=1, rejected=1, errors=[BatchError(index=1, reason="field 'id': Field required")]
    )
    assert ack.to_wire() == {
        "type": "ack",
        "accepted": 1,
        "rejected": 1,
        "errors": [{"index": 1, "reason": "field 'id': Field required"}],
    }
    with pytest.raises(ValidationError):
        EventBatchAck(accepted=-1, rejected=0)


# ---------------------------------------------------------------- validation_reason


def test_validation_reason_formats_nested_locations_and_stays_on_one_line() -> None:
    with pytest.raises(ValidationError) as exc_info:
        Heartbeat.model_validate(
            {
                "instanceId": "w-1",
                "host": "h",
                "pid": 1,
                "load": {"inFlight": 0, "capacity": 1},
                "agents": [{"agentId": "calc", "name": "c"}, {"name": "no id"}],
            }
        )
    assert validation_reason(exc_info.value) == "field 'agents[1].agentId': Field required"


def test_validation_reason_lists_at_most_five_errors() -> None:
    with pytest.raises(ValidationError) as exc_info:
        Heartbeat.model_validate({"agents": [{}, {}, {}, {}]})
    reason = validation_reason(exc_info.value)
    assert reason.count("field '") == 5
    assert reason.endswith("(+7 more)")  # 4 agents x 2 fields + instanceId, host, pid, load = 12
    assert "\n" not in reason
