"""The limits every edge enforces: sizes that leave room to forward, strings a database and JSON
can hold, finite numbers, bounded nesting, ids in their alphabet."""

from __future__ import annotations

import json
import math

import pytest
from loom_protocol import Heartbeat, Task, TaskSubmission
from loom_protocol.limits import (
    MAX_JSON_DEPTH,
    MAX_TASK_BYTES,
    NATS_MAX_PAYLOAD,
    bad_text,
    check_json_value,
    headers_size,
    wire_size,
)
from loom_protocol.payloads import LlmUsage
from pydantic import ValidationError


def test_a_task_leaves_room_for_headers_and_the_dispatchers_fields() -> None:
    assert MAX_TASK_BYTES == NATS_MAX_PAYLOAD - 16_384


def test_headers_count_as_nats_counts_them() -> None:
    assert headers_size(None) == 0
    assert headers_size({"a": "b"}) == len(b"NATS/1.0\r\na: b\r\n\r\n")
    assert wire_size(b"xyz", {"a": "b"}) == 3 + len(b"NATS/1.0\r\na: b\r\n\r\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fine é ✓", None),
        ("a\x00b", "a NUL character"),
        ("\ud800", "a lone surrogate"),
        ("\udfff", "a lone surrogate"),
    ],
)
def test_bad_text(value: str, expected: str | None) -> None:
    assert bad_text(value) == expected


def test_check_json_value_names_where() -> None:
    assert check_json_value({"a": [1, 2.5, "x", None, True]}) is None
    assert (
        check_json_value({"a": [1, math.nan]}) == "at a[1]: nan is not a JSON number (numbers must be finite)"
    )
    assert "at b.c: the string contains a NUL" in (check_json_value({"b": {"c": "\x00"}}) or "")
    assert "a key contains a lone surrogate" in (check_json_value({"\ud800": 1}) or "")
    deep: list[object] = []
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    assert "nested deeper than" in (check_json_value(deep) or "")


@pytest.mark.parametrize(
    "fields",
    [
        {"parameters": {"a": "\ud800"}},
        {"parameters": {"a": "x\x00"}},
        {"parameters": {"a": math.inf}},
        {"metadata": {"a": math.nan}},
        {"parentTaskId": "../x"},
        {"parentTaskId": "a.>"},
        {"parentTaskId": "a" * 10_000},
        {"sourceAgent": "a" * 10_000},
        {"sourceAgent": "a b"},
        {"sessionId": "a\x00"},
        {"taskId": "\ud800"},
    ],
)
def test_a_submission_refuses_what_cannot_be_carried(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TaskSubmission.model_validate({"targetAgent": "echo", **fields})


def test_nan_literals_are_refused_over_json() -> None:
    with pytest.raises(ValidationError):
        TaskSubmission.model_validate_json('{"targetAgent": "echo", "parameters": {"x": NaN}}')


def test_ids_in_their_alphabet_are_accepted() -> None:
    sub = TaskSubmission.model_validate(
        {
            "targetAgent": "echo",
            "sourceAgent": "user:alice@example.com",
            "sessionId": "ctx-1.2/3+4=",
            "parentTaskId": "p:1",
        }
    )
    task = Task(**sub.model_dump(exclude_none=True))
    assert task.source_agent == "user:alice@example.com"
    assert json.loads(task.to_json())["sessionId"] == "ctx-1.2/3+4="


@pytest.mark.parametrize("interval", [math.inf, math.nan, 1e9, 1e300, 0, -1])
def test_a_heartbeat_interval_is_finite_and_bounded(interval: float) -> None:
    with pytest.raises(ValidationError):
        Heartbeat.model_validate({"instanceId": "w1", "agentIds": ["echo"], "intervalS": interval})


@pytest.mark.parametrize("fields", [{"cost_usd": 1e308}, {"cost_usd": math.inf}, {"input_tokens": 10**15}])
def test_llm_usage_figures_are_bounded(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LlmUsage.model_validate(fields)
