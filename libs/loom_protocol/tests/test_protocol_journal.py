"""The task journal: its key-value keys, the per-task filter and the entries."""

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loom_protocol import (
    JOURNAL_BUCKET,
    JournalEntry,
    JournalKind,
    McpToolCall,
    McpToolResult,
    RecordedChild,
    RecordedLlmStep,
    RecordedToolStep,
    journal_key,
    journal_task_filter,
    tool_step_id,
)

# NATS key-value keys: these characters only, no empty token between dots.
KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")

TASK_IDS = st.from_regex(r"[A-Za-z0-9_:-]{1,128}", fullmatch=True)
ANY_TEXT_IDS = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=64)
ENTRY_IDS = st.integers(min_value=0, max_value=10_000) | st.builds(
    tool_step_id, st.integers(min_value=1, max_value=500), st.integers(min_value=0, max_value=50)
)
AT = datetime(2025, 6, 1, 8, 30, tzinfo=timezone(timedelta(hours=-3)))
CALL = McpToolCall(call_id="c1", name="add", arguments={"a": 1})


def _is_kv_key(key: str) -> bool:
    return bool(KV_KEY.match(key)) and all(key.split("."))


def _filter_matches(pattern: str, key: str) -> bool:
    p, k = pattern.split("."), key.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(k) > i
        if i >= len(k) or (token != "*" and token != k[i]):
            return False
    return len(p) == len(k)


def test_names_are_pinned() -> None:
    assert JOURNAL_BUCKET == "LOOM_JOURNAL"
    assert [k.value for k in JournalKind] == ["llm", "tool", "child"]
    assert tool_step_id(3, 1) == "3_1"
    assert tool_step_id(3, 1) != tool_step_id(31, 0) != tool_step_id(1, 31)


def test_key_shape_is_task_kind_entry() -> None:
    key = journal_key("run:1", JournalKind.TOOL, tool_step_id(2, 0))
    token, kind, entry = key.split(".")
    assert (kind, entry) == ("tool", "2_0")
    assert ":" not in token and journal_key("run:1", "llm", 1) == f"{token}.llm.1"
    assert journal_key("run:1", "child", 0) == f"{token}.child.0"
    assert journal_task_filter("run:1") == f"{token}.>"


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError):
        journal_key("t-1", "memory", 1)


@pytest.mark.parametrize("task_id", ["run:1", "a:b:c", "x", "A-b_c", "0" * 128, ":", "-", "_"])
def test_keys_of_awkward_task_ids_are_valid(task_id: str) -> None:
    for kind in JournalKind:
        key = journal_key(task_id, kind, 7)
        assert _is_kv_key(key), key
        assert _filter_matches(journal_task_filter(task_id), key)


@settings(max_examples=200)
@given(task_id=TASK_IDS | ANY_TEXT_IDS, kind=st.sampled_from(JournalKind), entry=ENTRY_IDS)
def test_every_key_is_a_valid_kv_key(task_id: str, kind: JournalKind, entry: str | int) -> None:
    key = journal_key(task_id, kind, entry)
    assert _is_kv_key(key), key
    assert len(key.split(".")) == 3
    task_filter = journal_task_filter(task_id)
    assert _is_kv_key(task_filter.removesuffix(".>")) and task_filter.endswith(".>")


@settings(max_examples=300)
@given(
    a=TASK_IDS | ANY_TEXT_IDS, b=TASK_IDS | ANY_TEXT_IDS, kind=st.sampled_from(JournalKind), entry=ENTRY_IDS
)
def test_a_task_filter_matches_its_own_keys_and_no_other_tasks(
    a: str, b: str, kind: JournalKind, entry: str | int
) -> None:
    assert _filter_matches(journal_task_filter(a), journal_key(a, kind, entry))
    if a != b:
        key_b = journal_key(b, kind, entry)
        assert not _filter_matches(journal_task_filter(a), key_b)
        # no task's keys start with another task's part, so a prefix scan cannot mix them up either
        assert not key_b.startswith(journal_task_filter(a).removesuffix(">"))


@pytest.mark.parametrize(
    ("a", "b"), [("a", "a:b"), ("a:b", "a:b:c"), ("t1", "t10"), ("run:1", "run-1"), ("run:1", "run_1")]
)
def test_task_ids_that_share_a_prefix_do_not_share_keys(a: str, b: str) -> None:
    keys_a = {journal_key(a, kind, n) for kind in JournalKind for n in range(3)}
    keys_b = {journal_key(b, kind, n) for kind in JournalKind for n in range(3)}
    assert not keys_a & keys_b
    assert all(not _filter_matches(journal_task_filter(a), key) for key in keys_b)
    assert all(not _filter_matches(journal_task_filter(b), key) for key in keys_a)


ENTRIES = [
    JournalEntry(
        kind=JournalKind.LLM,
        attempt=1,
        instance_id="w-1",
        at=AT,
        llm=RecordedLlmStep(step=1, content="c", tool_calls=[CALL], input_tokens=3, output_tokens=2),
    ),
    JournalEntry(
        kind=JournalKind.TOOL,
        attempt=2,
        instance_id="w-2",
        at=AT,
        tool=RecordedToolStep(step=1, call=CALL, result=McpToolResult(call_id="c1", name="add", content=3)),
    ),
    JournalEntry(
        kind=JournalKind.CHILD,
        at=AT,
        child=RecordedChild(index=0, agent="echo", parameters={}, task_id="t:2"),
    ),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.kind.value for e in ENTRIES])
def test_entries_round_trip(entry: JournalEntry) -> None:
    again = JournalEntry.from_json(entry.to_json())
    assert again == entry
    assert again.at.utcoffset() == timedelta(hours=-3)
    wire = entry.to_wire()
    assert wire["kind"] == entry.kind.value
    assert {"llm", "tool", "child"} & set(wire) == {entry.kind.value}
    assert JournalEntry.model_validate(wire) == entry


def test_entry_wire_keys_are_camel_case() -> None:
    wire = ENTRIES[0].to_wire()
    assert wire["instanceId"] == "w-1" and "instance_id" not in wire
    assert wire["llm"]["toolCalls"][0]["callId"] == "c1"
    assert JournalEntry.model_validate({"kind": "child", "attempt": 0}).attempt == 0
    with pytest.raises(ValueError):
        JournalEntry.model_validate({"kind": "memory"})
    with pytest.raises(ValueError):
        JournalEntry.model_validate({"kind": "llm", "attempt": -1})
