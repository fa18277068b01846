"""The dispatcher's answer streams without a server: the chunk tail and the SSE body."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loom_dispatcher.streaming import AnswerTail, answer_events
from loom_protocol import Task, TaskStatus, TaskStatusChanged, TaskStreamChunk


def chunk(task_id: str, index: int, delta: str = "", *, done: bool = False) -> TaskStreamChunk:
    return TaskStreamChunk(task_id=task_id, index=index, delta=delta, done=done)


def parse(events: list[bytes]) -> list[tuple[str, Any]]:
    parsed: list[tuple[str, Any]] = []
    for raw in events:
        text = raw.decode()
        if text.startswith(":"):
            parsed.append(("comment", text.strip()))
            continue
        name = "message"
        for line in text.strip().splitlines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            else:
                parsed.append((name, json.loads(line.removeprefix("data: "))))
    return parsed


class Stored:
    """What the task store answers, changed by the test."""

    def __init__(self, task: Task | None) -> None:
        self.task = task

    async def __call__(self) -> Task | None:
        return self.task


def final(task: Task) -> TaskStatusChanged:
    return TaskStatusChanged.from_task(task, at=datetime.now(UTC), final=True)


async def collect(gen: Any) -> list[bytes]:
    return [event async for event in gen]


async def test_backlog_then_live_chunks_then_done_with_the_result() -> None:
    tail = AnswerTail()
    running = Task(task_id="t1", target_agent="a", status=TaskStatus.RUNNING)
    tail.add(chunk("t1", 0, "Hel"))
    reader = tail.follow("t1")
    tail.add(chunk("t1", 1, "lo"))
    tail.add(chunk("other", 0, "not mine"))
    tail.add(chunk("t1", 2, done=True))
    ended = running.with_status(TaskStatus.COMPLETED, result={"answer": "Hello"})
    reader.queue.put_nowait(final(ended))
    events = parse(await collect(answer_events(reader, Stored(running), timeout_s=5)))
    assert [(name, data.get("delta")) for name, data in events[:-1]] == [
        ("message", "Hel"),
        ("message", "lo"),
        ("message", ""),
    ]
    # the done event reads the store at the end: the test's store still says running
    assert events[-1] == ("done", {"taskId": "t1", "status": "running", "result": None, "error": None})
    tail.leave(reader)
    assert tail.follow("t1").backlog == [
        chunk("t1", 0, "Hel"),
        chunk("t1", 1, "lo"),
        chunk("t1", 2, done=True),
    ]


async def test_a_task_that_ended_without_chunks_gets_done_at_once() -> None:
    ended = Task(task_id="t2", target_agent="a", status=TaskStatus.FAILED, error="boom")
    reader = AnswerTail().follow("t2")
    events = parse(await collect(answer_events(reader, Stored(ended), timeout_s=5)))
    assert events == [("done", {"taskId": "t2", "status": "failed", "result": None, "error": "boom"})]


async def test_after_the_end_missing_chunks_are_waited_for_a_grace_only() -> None:
    tail = AnswerTail()
    tail.add(chunk("t3", 0, "half an ans"))  # the worker died before its done chunk
    ended = Task(task_id="t3", target_agent="a", status=TaskStatus.COMPLETED, result={"answer": "x"})
    reader = tail.follow("t3")
    events = parse(await collect(answer_events(reader, Stored(ended), timeout_s=60, grace_s=0.05)))
    assert [name for name, _ in events] == ["message", "done"]
    assert events[-1][1]["status"] == "completed"


async def test_a_task_that_never_starts_ends_with_timeout_after_pings() -> None:
    pending = Task(task_id="t4", target_agent="a")
    reader = AnswerTail().follow("t4")
    events = parse(await collect(answer_events(reader, Stored(pending), timeout_s=0.2, ping_s=0.05)))
    assert events[-1] == ("timeout", {"taskId": "t4", "waitedS": 0.2})
    assert {name for name, _ in events[:-1]} == {"comment"} and len(events) >= 3


async def test_the_tail_keeps_the_latest_tasks_and_caps_chunks_per_task() -> None:
    tail = AnswerTail(max_tasks=2, max_chunks=3)
    for n in range(5):
        tail.add(chunk("big", n, str(n)))
    tail.add(chunk("b", 0, "b"))
    tail.add(chunk("c", 0, "c"))
    assert tail.follow("big").backlog == []  # evicted: the oldest of three tasks
    assert [c.delta for c in tail.follow("b").backlog] == ["b"]
    capped = AnswerTail(max_chunks=3)
    live = capped.follow("big")
    for n in range(5):
        capped.add(chunk("big", n, str(n)))
    assert [c.delta for c in capped.follow("big").backlog] == ["0", "1", "2"]
    assert live.queue.qsize() == 5  # a reader still gets every chunk live


async def test_the_tail_keeps_at_most_max_bytes_of_text_dropping_the_oldest_task() -> None:
    tail = AnswerTail(max_bytes=10)
    tail.add(chunk("old", 0, "12345678"))
    tail.add(chunk("new", 0, "abcd"))  # 12 bytes in all: the oldest task goes
    assert tail.follow("old").backlog == []
    assert [c.delta for c in tail.follow("new").backlog] == ["abcd"]
    assert tail.kept_bytes == 4
    tail.add(chunk("huge", 0, "x" * 11))  # alone over the budget: forwarded live, never kept
    assert tail.follow("huge").backlog == [] and tail.kept_bytes == 4


@dataclass
class FakeMsg:
    subject: str
    data: bytes


async def test_malformed_chunks_are_dead_lettered_with_the_reason() -> None:
    rejected: list[tuple[str, bytes, str]] = []

    async def reject(subject: str, raw: bytes, reason: str) -> None:
        rejected.append((subject, raw, reason))

    tail = AnswerTail()
    tail._reject = reject
    await tail._on_chunk(FakeMsg("loom.stream.t5", b"not json"))
    await tail._on_chunk(FakeMsg("loom.stream.t5", chunk("t6", 0, "x").to_json()))  # another task's
    await tail._on_chunk(FakeMsg("loom.stream.t5", chunk("t5", 0, "ok").to_json()))
    assert [r[0] for r in rejected] == ["loom.stream.t5", "loom.stream.t5"]
    assert all(r[2].startswith("malformed stream chunk") for r in rejected)
    assert [c.delta for c in tail.follow("t5").backlog] == ["ok"]
