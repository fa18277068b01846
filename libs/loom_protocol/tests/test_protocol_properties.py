"""Property tests: serialisation of Task and CloudEvent round-trips for any valid value."""

import re
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loom_protocol import (
    CloudEvent,
    EventType,
    Task,
    TaskAction,
    TaskStatus,
    TraceContext,
    encode_event,
    new_event,
    subjects,
)
from loom_protocol.tasks import can_transition
from pydantic import ValidationError

TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
LABEL = st.from_regex(r"[A-Za-z0-9_.:@/+=-]{1,64}", fullmatch=True)
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(TEXT, JSON_VALUES, max_size=5)

AGENT_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)
TASK_IDS = st.from_regex(r"[A-Za-z0-9_:-]{1,128}", fullmatch=True)
OFFSETS = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(hours=-8)),
        timezone(timedelta(hours=14)),
    ]
)
AWARE_TIMES = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=OFFSETS)
HEX32 = st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda s: s != "0" * 32)
HEX16 = st.from_regex(r"[0-9a-f]{16}", fullmatch=True).filter(lambda s: s != "0" * 16)
FLAGS = st.from_regex(r"[0-9a-f]{2}", fullmatch=True)
TRACEPARENTS = st.builds(lambda t, p, f: f"00-{t}-{p}-{f}", HEX32, HEX16, FLAGS)
TRACES = st.fixed_dictionaries({"traceparent": st.none() | TRACEPARENTS, "tracestate": st.none() | TEXT}).map(
    lambda fields: TraceContext(**fields)
)

# fixed_dictionaries rather than st.builds(Task, ...): builds() would also infer the
# camelCase keyword arguments of pydantic's signature and those win over the names.
TASKS = st.fixed_dictionaries(
    dict(
        task_id=TASK_IDS,
        source_agent=st.none() | LABEL,
        target_agent=AGENT_IDS,
        action=st.sampled_from(TaskAction),
        parameters=JSON_OBJECTS,
        status=st.sampled_from(TaskStatus),
        result=JSON_VALUES,
        error=st.none() | TEXT,
        metadata=JSON_OBJECTS,
        parent_task_id=st.none() | TASK_IDS,
        session_id=st.none() | LABEL,
        attempt=st.integers(min_value=0, max_value=2**40),
        instance_id=st.none() | AGENT_IDS,
        created_at=AWARE_TIMES,
        updated_at=AWARE_TIMES,
        trace=TRACES,
    )
).map(lambda fields: Task(**fields))

_EVENT_FIELDS = set(CloudEvent.model_fields)
EXTENSION_NAMES = st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True).filter(lambda n: n not in _EVENT_FIELDS)
EXTENSION_VALUES = TEXT | st.booleans() | st.integers(min_value=-(2**31), max_value=2**31 - 1)
SOURCES = st.text(alphabet=string.ascii_letters + string.digits + ":/._-~", min_size=1, max_size=40)


@st.composite
def cloud_events(draw: st.DrawFn) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": draw(st.text(min_size=1, max_size=40, alphabet=st.characters(exclude_categories=["Cs"]))),
        "source": draw(SOURCES),
        "specversion": "1.0",
        "type": draw(
            st.sampled_from(EventType) | st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,3}", fullmatch=True)
        ),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "subject": TEXT,
        "time": AWARE_TIMES,
        "datacontenttype": st.sampled_from(["application/json", "text/plain"]),
        "dataschema": SOURCES,
        "data": JSON_VALUES.filter(lambda v: v is not None),
        "traceparent": TRACEPARENTS,
        "tracestate": TEXT,
        "taskid": TASK_IDS,
        "sessionid": TEXT,
        "parenttaskid": TASK_IDS,
        "instanceid": AGENT_IDS,
        "agentid": AGENT_IDS,
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            payload[name] = draw(strategy)
    payload.update(draw(st.dictionaries(EXTENSION_NAMES, EXTENSION_VALUES, max_size=4)))
    return payload


@settings(max_examples=200, deadline=None)
@given(TASKS)
def test_task_json_round_trip(task: Task) -> None:
    again = Task.from_json(task.to_json())
    assert again == task
    assert Task.model_validate(task.to_wire()) == task
    assert Task.model_validate(task.model_dump()) == task  # snake_case, Python values


@settings(max_examples=100, deadline=None)
@given(TASKS, st.sampled_from(TaskStatus))
def test_with_status_obeys_the_table(task: Task, new: TaskStatus) -> None:
    if can_transition(task.status, new):
        moved = task.with_status(new)
        assert moved.status is new and moved.task_id == task.task_id and moved.parameters == task.parameters
    else:
        with pytest.raises(ValueError, match="cannot move from"):
            task.with_status(new)


@settings(max_examples=100, deadline=None)
@given(TASKS)
def test_valid_ids_make_valid_subjects(task: Task) -> None:
    assert (
        subjects.token_of(subjects.task_submitted(task.target_agent), subjects.TASK_SUBMITTED_ALL)
        == task.target_agent
    )
    assert subjects.token_of(subjects.task_status(task.task_id), subjects.TASK_STATUS_ALL) == task.task_id


@settings(max_examples=200, deadline=None)
@given(cloud_events())
def test_cloudevent_json_round_trip(payload: dict[str, Any]) -> None:
    event = CloudEvent.model_validate(payload)
    again = CloudEvent.from_json(event.to_json())
    assert again == event
    assert again.model_extra == event.model_extra
    assert CloudEvent.model_validate(event.to_wire()) == event
    wire = event.to_wire()
    for name, value in payload.items():
        if name not in ("time", "type"):
            assert wire[name] == value, name
    if "traceparent" in payload:
        assert event.trace_id == payload["traceparent"][3:35]


@settings(max_examples=200, deadline=None)
@given(TASKS, st.sampled_from(EventType), st.none() | JSON_OBJECTS, AWARE_TIMES, st.none() | AGENT_IDS)
def test_encoded_event_is_the_validated_events_json(
    task: Task, event_type: EventType, data: dict[str, Any] | None, at: datetime, instance_id: str | None
) -> None:
    """What a producer encodes without validation is byte for byte what new_event would send."""
    attributes: dict[str, Any] = dict(
        data=None if data is None else {"status": task.status, **data},
        subject=f"agent:{task.target_agent}",
        task_id=task.task_id,
        session_id=task.session_id,
        parent_task_id=task.parent_task_id,
        traceparent=task.trace.traceparent,
        tracestate=task.trace.tracestate,
        instance_id=instance_id,
        agent_id=task.target_agent,
        time=at,
    )
    event_id, encoded = encode_event(event_type, "/services/dispatcher", **attributes)
    expected = new_event(event_type, "/services/dispatcher", id=event_id, **attributes)
    assert encoded == expected.to_json()
    assert CloudEvent.from_json(encoded) == expected


_TRACEPARENT_RE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | TRACEPARENTS.map(lambda s: s.upper()) | TRACEPARENTS.map(lambda s: s + " "))
def test_anything_but_a_valid_traceparent_is_rejected(value: str) -> None:
    valid = (
        _TRACEPARENT_RE.fullmatch(value) is not None and value[3:35] != "0" * 32 and value[36:52] != "0" * 16
    )
    if valid:
        assert TraceContext(traceparent=value).trace_id == value[3:35]
    else:
        with pytest.raises(ValidationError):
            TraceContext(traceparent=value)
        with pytest.raises(ValidationError):
            CloudEvent.model_validate(
                {"id": "1", "source": "s", "specversion": "1.0", "type": "t", "traceparent": value}
            )


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=25), EXTENSION_VALUES)
def test_extension_names_follow_the_spec_rule(name: str, value: Any) -> None:
    payload = {"id": "1", "source": "s", "specversion": "1.0", "type": "t", name: value}
    if name in _EVENT_FIELDS:
        return
    if re.fullmatch(r"[a-z0-9]{1,20}", name):
        assert CloudEvent.model_validate(payload).extensions[name] == value
    else:
        with pytest.raises(ValidationError, match="name must match"):
            CloudEvent.model_validate(payload)
