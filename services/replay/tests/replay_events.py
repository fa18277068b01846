"""Synthetic events shaped exactly like the ones the worker, the dispatcher and ingest store
(see the agent runtime's react.py / orchestrator.py / memory.py and ingest's rows.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Trace:
    """Builds a trace's events in order, with times, ids and per-task seqs."""

    def __init__(self, trace_id: str = "ab" * 16) -> None:
        self.trace_id = trace_id
        self.events: list[dict[str, Any]] = []
        self._clock = itertools.count()
        self._seqs: dict[str, itertools.count[int]] = {}

    def _time(self) -> str:
        return (T0 + timedelta(milliseconds=next(self._clock))).isoformat()

    def event(
        self,
        kind: str,
        task: str,
        data: dict[str, Any],
        *,
        agent: str = "calculator",
        session: str | None = None,
        subject: str | None = None,
    ) -> dict[str, Any]:
        seq = next(self._seqs.setdefault(task, itertools.count()))
        event = {
            "id": f"e{len(self.events)}",
            "type": kind,
            "source": f"/workers/w1/agents/{agent}",
            "specversion": "1.0",
            "time": self._time(),
            "taskid": task,
            "agentid": agent,
            "traceid": self.trace_id,
            "seq": seq,
            "data": data,
        }
        if session:
            event["sessionid"] = session
        if subject:
            event["subject"] = subject
        self.events.append(event)
        return event

    def bus(self, kind: str, task: str, data: dict[str, Any], *, agent: str = "calculator") -> dict[str, Any]:
        """A loom.task.* row as ingest stores it (no seq; data = the message, which ingest
        validated, so its required fields are filled in here)."""
        time = self._time()
        required = {"taskId": task, "targetAgent": agent}
        if kind == "loom.task.dead":
            data = {"at": time, **data, "task": {**required, **data["task"]}}
        else:  # "at" for a status change, "createdAt"/"updatedAt" for a task
            data = {**required, "at": time, "createdAt": time, "updatedAt": time, **data}
        event = {
            "id": f"b{len(self.events)}",
            "type": kind,
            "source": "/nats/LOOM_TASKS",
            "specversion": "1.0",
            "time": time,
            "taskid": task,
            "agentid": agent,
            "traceid": self.trace_id,
            "data": data,
        }
        self.events.append(event)
        return event

    def dispatcher(self, kind: str, task: str, status: str, *, agent: str = "calculator") -> dict[str, Any]:
        event = {
            "id": f"d{len(self.events)}",
            "type": kind,
            "source": "/dispatcher",
            "specversion": "1.0",
            "time": self._time(),
            "taskid": task,
            "agentid": agent,
            "traceid": self.trace_id,
            "data": {"status": status, "attempt": 1},
        }
        self.events.append(event)
        return event

    # -- whole runs ------------------------------------------------------------------------------

    def calculator_run(
        self,
        task: str,
        prompt: str = "what is (2+3)*4?",
        *,
        session: str | None = None,
        tool_content: str = "20",
        parent: str | None = None,
    ) -> None:
        """A ReAct calculator run: submitted, one tool step, an answer, completed."""
        self.bus(
            "loom.task.submitted",
            task,
            {
                "taskId": task,
                "targetAgent": "calculator",
                "parameters": {"prompt": prompt},
                "status": "pending",
                "sessionId": session,
                "parentTaskId": parent,
                "createdAt": self._time(),
            },
        )
        self.dispatcher("task.submitted", task, "pending")
        self.bus("loom.task.status.running", task, {"taskId": task, "status": "running", "attempt": 1})
        e = self.event
        e("llm.request", task, {"step": 1, "message_count": 2, "message_digests": ["u1"]}, session=session)
        e(
            "llm.usage",
            task,
            {
                "step": 1,
                "input_tokens": 10,
                "output_tokens": 5,
                "latency_s": 0.01,
                "model": "scripted-v1",
                "cost_usd": None,
            },
            session=session,
        )
        e(
            "agent.thought",
            task,
            {"step": 1, "content": "I will evaluate (2+3)*4 with the calculator."},
            session=session,
        )
        e(
            "agent.action",
            task,
            {"step": 1, "tool": "calculator", "arguments": {"expression": "(2+3)*4"}, "call_id": "call_0_0"},
            session=session,
            subject="tool:calculator",
        )
        e(
            "tool.call",
            task,
            {"call_id": "call_0_0", "name": "calculator", "arguments": {"expression": "(2+3)*4"}},
            session=session,
        )
        e(
            "tool.result",
            task,
            {
                "call_id": "call_0_0",
                "name": "calculator",
                "content": tool_content,
                "is_error": False,
                "duration_ms": 0.2,
            },
            session=session,
        )
        e(
            "memory.add",
            task,
            {
                "entry_id": f"n-{task}",
                "node_id": "calculator",
                "tier": "working",
                "content": f"calculator(expression='(2+3)*4') -> {tool_content}",
                "importance": 0.3,
                "metadata": {"role": "observation"},
                "role": "observation",
                "created_at": self._time(),
            },
            session=session,
        )
        e(
            "llm.request",
            task,
            {"step": 2, "message_count": 4, "message_digests": ["u1", "a1", "t1"]},
            session=session,
        )
        e(
            "llm.usage",
            task,
            {
                "step": 2,
                "input_tokens": 12,
                "output_tokens": 1,
                "latency_s": 0.01,
                "model": "scripted-v1",
                "cost_usd": 0.5,
            },
            session=session,
        )
        e("agent.answer", task, {"answer": tool_content, "steps": 2}, session=session)
        e(
            "memory.consolidate",
            task,
            {
                "promoted": 0,
                "dropped_working": 0,
                "session": 0,
                "working": 1,
                "long_term": 0,
                "threshold": 0.7,
                "keep_working": 20,
            },
            session=session,
        )
        result = {"answer": tool_content, "steps": 2, "usage": {"llm_calls": 2}}
        self.bus(
            "loom.task.status.completed", task, {"taskId": task, "status": "completed", "result": result}
        )
        self.bus(
            "loom.task.status.completed",
            task,
            {"taskId": task, "status": "completed", "result": result, "final": True, "at": self._time()},
        )
        self.dispatcher("task.completed", task, "completed")
