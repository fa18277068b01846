"""A 100k-event trace: creating a session and jumping to its end stay within bounded time and
memory of the replay process, because events are read in keyset pages and never held whole."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from .events_support import database_url_fixture, start_ingest  # noqa: F401 (fixture)
from .harness import Stack, process
from .replay_support import rss_bytes, start_replay

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TASKS = 1000
STEPS = 14  # 7 events per step, plus an answer and a consolidation: 100 events per task
TOTAL = TASKS * (STEPS * 7 + 2)
COLUMNS = (
    "time",
    "id",
    "kind",
    "type",
    "source",
    "subject",
    "trace_id",
    "task_id",
    "session_id",
    "parent_task_id",
    "node_id",
    "agent_id",
    "instance_id",
    "seq",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_s",
    "data",
    "attributes",
    "stream_seq",
)


def synthetic_trace(trace_id: str) -> list[tuple[Any, ...]]:
    """TASKS calculator-like tasks of one trace, as ingest would have stored their events."""
    start = datetime.now(UTC) - timedelta(hours=1)
    rows: list[tuple[Any, ...]] = []
    clock = 0

    def add(task_id: str, seq: int, kind: str, data: dict[str, Any], subject: str | None = None) -> None:
        nonlocal clock
        clock += 1
        when = start + timedelta(milliseconds=clock)
        event_id = uuid.uuid4().hex
        attributes = {
            "id": event_id,
            "source": "/workers/w-scale/agents/calculator",
            "specversion": "1.0",
            "type": kind,
            "time": when.isoformat(),
            "subject": subject,
            "taskid": task_id,
            "traceid": trace_id,
            "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
            "agentid": "calculator",
            "instanceid": "w-scale",
            "seq": seq,
        }
        rows.append(
            (
                when, event_id, "event", kind, attributes["source"], subject, trace_id, task_id, None, None,
                "calculator", "calculator", "w-scale", seq, None, None, None, None,
                json.dumps(data), json.dumps({k: v for k, v in attributes.items() if v is not None}), None,
            )
        )  # fmt: skip

    for t in range(TASKS):
        task_id = f"scale-{t:05d}"
        seq = 0
        for step in range(1, STEPS + 1):
            call = f"call_{step}_0"
            expression = f"{t} + {step}"
            steps: list[tuple[str, dict[str, Any], str | None]] = [
                ("llm.request", {"step": step, "message_count": 2 * step, "provider": "scripted"}, "llm:s"),
                ("llm.usage", {"step": step, "input_tokens": 20, "output_tokens": 8}, "llm:s"),
                ("agent.thought", {"step": step, "content": f"I will evaluate {expression}."}, None),
                ("agent.action", {"step": step, "tool": "calculator", "arguments": {"expression": expression},
                                  "call_id": call}, "tool:calculator"),
                ("tool.call", {"call_id": call, "name": "calculator",
                               "arguments": {"expression": expression}}, "tool:calculator"),
                ("tool.result", {"call_id": call, "name": "calculator", "content": str(t + step),
                                 "is_error": False, "duration_ms": 0.05}, "tool:calculator"),
                ("memory.add", {"entry_id": uuid.uuid4().hex, "node_id": "calculator", "tier": "working",
                                "content": f"calculator({expression}) -> {t + step}", "importance": 0.3,
                                "metadata": {"role": "observation"}, "role": "observation"}, None),
            ]  # fmt: skip
            for kind, data, subject in steps:
                add(task_id, seq, kind, data, subject)
                seq += 1
        add(task_id, seq, "agent.answer", {"answer": str(t + STEPS), "steps": STEPS})
        add(task_id, seq + 1, "memory.consolidate", {"promoted": 0, "dropped_working": 0, "threshold": 0.7,
                                                      "keep_working": 20})  # fmt: skip
    assert len(rows) == TOTAL
    return rows


async def test_a_100k_event_trace_creates_and_jumps_to_the_end_in_bounded_time_and_memory(
    database_url: str, stack: Stack, http: httpx.AsyncClient
) -> None:
    await start_ingest(stack, database_url)  # creates the schema
    trace_id = uuid.uuid4().hex
    conn = await asyncpg.connect(database_url)
    try:
        copied = time.monotonic()
        await conn.copy_records_to_table("events", records=synthetic_trace(trace_id), columns=COLUMNS)
        copied = time.monotonic() - copied
    finally:
        await conn.close()
    replay = process(await start_replay(stack, database_url, process=True))  # its RSS is measured
    assert replay.proc is not None
    pid = replay.proc.pid
    await http.get(f"{replay.url}/readyz")
    rss_before = rss_bytes(pid)

    started = time.monotonic()
    created = await http.post(f"{replay.url}/api/replay/create", params={"trace_id": trace_id}, timeout=60)
    create_s = time.monotonic() - started
    assert created.status_code == 201, created.text
    assert created.json()["total"] == TOTAL
    sid = created.json()["sessionId"]

    started = time.monotonic()
    end = await http.post(f"{replay.url}/api/replay/{sid}/jump", params={"index": TOTAL - 1}, timeout=120)
    jump_s = time.monotonic() - started
    assert end.status_code == 200, end.text
    rss_after = rss_bytes(pid)
    body = end.json()
    state = body["state"]
    assert body["index"] == TOTAL - 1 and body["event"]["type"] == "memory.consolidate"
    assert state["eventsApplied"] == TOTAL
    last = state["tasks"][f"scale-{TASKS - 1:05d}"]
    assert last["answer"] == str(TASKS - 1 + STEPS) and last["toolResultCount"] == STEPS
    # the user turn (its prompt is in no row of this synthetic trace), then assistant and tool turns
    assert [m["role"] for m in last["messages"][:3]] == ["user", "assistant", "tool"]
    assert len(last["messages"]) == 1 + 2 * STEPS
    assert len(state["memory"][f"scale-{TASKS - 1:05d}"]["working"]) == STEPS

    # deep moves now start from a checkpoint of the fold: much cheaper than the first pass
    started = time.monotonic()
    middle = await http.post(f"{replay.url}/api/replay/{sid}/jump", params={"index": TOTAL // 2 + 17})
    back = await http.post(f"{replay.url}/api/replay/{sid}/step", params={"direction": "backward"})
    moves_s = time.monotonic() - started
    assert middle.status_code == back.status_code == 200
    assert back.json()["index"] == TOTAL // 2 + 16
    assert back.json()["state"]["eventsApplied"] == TOTAL // 2 + 17

    growth_mb = (rss_after - rss_before) / 2**20
    print(
        f"\n100k-event trace: COPY {copied:.2f}s; create {create_s:.2f}s; jump to the end {jump_s:.2f}s; "
        f"jump to the middle + step back {moves_s:.2f}s; replay RSS {rss_before / 2**20:.0f} MB -> "
        f"{rss_after / 2**20:.0f} MB (+{growth_mb:.0f} MB)"
    )
    assert create_s < 10, create_s
    assert jump_s < 10, jump_s
    assert moves_s < jump_s
    assert growth_mb < 200, growth_mb
