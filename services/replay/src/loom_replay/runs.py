"""Deterministic replays and forks: new tasks through the dispatcher, compared with the original.

Replay never imports the worker and never writes into the original trace: it rebuilds the
task's recording from the events table (recording.py) and submits a new task to the same
agent over the dispatcher's REST API, without a traceparent, so the dispatcher starts a new
trace for it. The worker's replay hook (``loom_agent_worker.replay_agents``) runs the real agent
against the recording and answers with the divergence report (deterministic) or the live
outcome (fork).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from prometheus_client import Counter

from .config import Settings
from .errors import Conflict, Invalid, NotFound, Upstream
from .recording import (
    TERMINAL,
    Overrides,
    TaskRecord,
    build_recording,
    conversation,
    steps_of,
    summary_of_record,
    summary_of_task,
    task_record,
)
from .store import EventReader, event_of

log = logging.getLogger(__name__)

RUNS = Counter("loom_replay_runs_total", "Deterministic replays and forks submitted", ["mode", "outcome"])
# what a fork's script holds for the steps the recording answers (never read by the agent)
RECORDED_STEP = {"answer": "(answered from the recording)"}


class Runs:
    def __init__(self, store: EventReader, dispatcher: httpx.AsyncClient, settings: Settings) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings

    # -- the original --------------------------------------------------------------------------

    async def load(self, task_id: str) -> TaskRecord:
        limit = self.settings.max_task_events
        rows = await self.store.task_rows(task_id, limit + 1)
        if not rows:
            raise NotFound(f"no events for task {task_id!r}")
        if len(rows) > limit:
            raise Invalid(f"task {task_id!r} has more than {limit} events: too large to replay")
        record = task_record(task_id, ((row["kind"], row["time"], event_of(row)) for row in rows))
        if record.parameters is None or record.agent is None or record.status not in TERMINAL:
            task = await self._dispatcher_task(task_id)
            if task is not None:
                if record.parameters is None and isinstance(task.get("parameters"), dict):
                    record.parameters = task["parameters"]
                record.agent = record.agent or task.get("targetAgent")
            if record.status not in TERMINAL:
                status = task.get("status") if task is not None else record.status
                if status in TERMINAL:
                    raise Conflict(
                        f"task {task_id!r} ended {status} but its events are not all stored yet; "
                        "retry in a moment"
                    )
                raise Conflict(f"task {task_id!r} has not finished (status {status}): replay it when it has")
        if record.parameters is None or record.agent is None:
            raise Invalid(
                f"the parameters of task {task_id!r} are neither in the events table "
                "nor known to the dispatcher"
            )
        return record

    async def _dispatcher_task(self, task_id: str) -> dict[str, Any] | None:
        try:
            response = await self.dispatcher.get(f"/api/tasks/{task_id}", timeout=10)
        except httpx.HTTPError as exc:
            log.info("dispatcher lookup of %s failed: %r", task_id, exc)
            return None
        if response.status_code != 200:
            return None
        task: dict[str, Any] = response.json()
        return task

    async def children(self, record: TaskRecord) -> list[TaskRecord]:
        if not record.trace_id:
            return []
        rows = await self.store.child_rows(record.trace_id, record.task_id, self.settings.max_task_events)
        grouped: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {}
        for row in rows:
            if row["task_id"]:
                grouped.setdefault(row["task_id"], []).append((row["kind"], row["time"], event_of(row)))
        return [task_record(task_id, child_rows) for task_id, child_rows in grouped.items()]

    # -- deterministic replay ------------------------------------------------------------------

    async def deterministic(
        self, task_id: str, overrides: Overrides | None, wait_s: float | None
    ) -> tuple[int, dict[str, Any]]:
        record = await self.load(task_id)
        recording = build_recording(record, await self.children(record))
        replayed = overrides.apply(recording) if overrides is not None else recording
        metadata = {"replay": {"mode": "deterministic", "recording": replayed, "originalTaskId": task_id}}
        task = await self.submit(record, record.parameters or {}, metadata, wait_s)
        body: dict[str, Any] = {
            "diverged": None,
            "step": None,
            "at": None,
            "reason": None,
            "expected": None,
            "got": None,
            "tampered": overrides is not None,
            "original": summary_of_record(record),
            "replay": summary_of_task(task),
        }
        if task.get("status") not in TERMINAL:
            RUNS.labels("deterministic", "pending").inc()
            body["reason"] = (
                f"the replay task is {task.get('status')}: poll the dispatcher for task {task.get('taskId')}"
            )
            return 202, body
        result = task.get("result") if isinstance(task.get("result"), dict) else {}
        report = result.get("replay")
        if task.get("status") != "completed" or not isinstance(report, dict):
            RUNS.labels("deterministic", "error").inc()
            raise Upstream(
                f"the replay task {task.get('taskId')} ended {task.get('status')} without a replay report"
                + (
                    f": {task.get('error')}"
                    if task.get("error")
                    else " (does the worker run the replay hook?)"
                )
            )
        body.update({k: report.get(k) for k in ("diverged", "step", "at", "reason", "expected", "got")})
        body["replay"]["report"] = report
        if report.get("at") == "llm" and isinstance(report.get("got"), dict):
            index = report["got"].get("messageIndex")
            messages = conversation(recording, (record.parameters or {}).get("prompt"))
            if isinstance(index, int) and 0 <= index < len(messages) and isinstance(body["expected"], dict):
                body["expected"] = {**body["expected"], **messages[index]}
        RUNS.labels("deterministic", "diverged" if report.get("diverged") else "same").inc()
        return 200, body

    # -- fork ----------------------------------------------------------------------------------

    async def fork(
        self, task_id: str, from_step: int, changes: dict[str, Any], wait_s: float | None
    ) -> tuple[int, dict[str, Any]]:
        record = await self.load(task_id)
        recording = build_recording(record, await self.children(record))
        steps = steps_of(recording)
        if not 1 <= from_step <= steps:
            raise Invalid(f"from_step must be in 1..{steps}: task {task_id!r} has {steps} step(s)")
        parameters = dict(record.parameters or {})
        parameters.update(changes.get("parameters") or {})
        if changes.get("prompt") is not None:
            parameters["prompt"] = changes["prompt"]
        if changes.get("script") is not None:
            parameters["script"] = [RECORDED_STEP] * (from_step - 1) + list(changes["script"])
        worker_changes = {
            key: changes[key]
            for key in ("provider", "model", "tools", "systemPrompt", "maxSteps")
            if changes.get(key) is not None
        }
        metadata = {
            "forkOf": task_id,
            "replay": {
                "mode": "fork",
                "fromStep": from_step,
                "recording": recording,
                "originalTaskId": task_id,
                "changes": worker_changes,
            },
        }
        task = await self.submit(record, parameters, metadata, wait_s)
        original, forked = summary_of_record(record), summary_of_task(task)
        done = task.get("status") in TERMINAL
        RUNS.labels("fork", task.get("status") or "unknown").inc()
        return (200 if done else 202), {
            "fromStep": from_step,
            "changes": {k: v for k, v in changes.items() if v is not None},
            "original": original,
            "fork": forked,
            "comparison": compare(original, forked) if done else None,
        }

    # -- the dispatcher ------------------------------------------------------------------------

    async def submit(
        self, record: TaskRecord, parameters: dict[str, Any], metadata: dict[str, Any], wait_s: float | None
    ) -> dict[str, Any]:
        """Submit a new task to the original's agent and wait for its outcome (up to ``wait_s``).

        No traceparent is sent: the dispatcher starts a new trace, so nothing the run emits
        lands in the original's trace.
        """
        wait = self.settings.run_wait_s if wait_s is None else wait_s
        body = {
            "targetAgent": record.agent,
            "sourceAgent": "replay",
            "parameters": parameters,
            "metadata": metadata,
        }
        try:
            response = await self.dispatcher.post(
                "/api/tasks", params={"wait": wait}, json=body, timeout=wait + 15
            )
        except httpx.HTTPError as exc:
            raise Upstream(f"the dispatcher at {self.dispatcher.base_url} is unreachable: {exc!r}") from None
        if response.status_code >= 400:
            raise Upstream(
                f"the dispatcher refused the task: HTTP {response.status_code}: {response.text[:500]}"
            )
        task: dict[str, Any] = response.json()
        return task


def compare(original: dict[str, Any], forked: dict[str, Any]) -> dict[str, Any]:
    def tokens(summary: dict[str, Any]) -> int | None:
        usage = summary.get("usage") or {}
        if not usage:
            return None
        return int(usage.get("inputTokens") or 0) + int(usage.get("outputTokens") or 0)

    def delta(a: Any, b: Any) -> Any:
        return b - a if isinstance(a, int | float) and isinstance(b, int | float) else None

    rows = {
        "status": (original.get("status"), forked.get("status")),
        "answer": (original.get("answer"), forked.get("answer")),
        "steps": (original.get("steps"), forked.get("steps")),
        "tokens": (tokens(original), tokens(forked)),
        "latencyS": (original.get("latencyS"), forked.get("latencyS")),
    }
    return {
        "sameAnswer": rows["answer"][0] == rows["answer"][1],
        **{name: {"original": a, "fork": b, "delta": delta(a, b)} for name, (a, b) in rows.items()},
    }
