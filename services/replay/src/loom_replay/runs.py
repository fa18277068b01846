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
from contextvars import ContextVar
from typing import Any

import httpx
from loom_protocol import (
    REPLAY_METADATA_KEY,
    TERMINAL_STATUSES,
    ForkChanges,
    ReplayMode,
    ReplayReport,
    ReplaySpec,
    Task,
    TaskStatus,
    TaskSubmission,
    validation_reason,
)
from prometheus_client import Counter
from pydantic import ValidationError

from .config import Settings
from .errors import Conflict, Invalid, NotFound, Refused, Upstream
from .recording import (
    Overrides,
    TaskHistory,
    build_recording,
    conversation,
    summary_of_record,
    summary_of_task,
    task_history,
)
from .store import EventReader, event_of

log = logging.getLogger(__name__)

RUNS = Counter("loom_replay_runs_total", "Deterministic replays and forks submitted", ["mode", "outcome"])
# what a fork's script holds for the steps the recording answers (never read by the agent)
RECORDED_STEP = {"answer": "(answered from the recording)"}


CALLER_AUTHORIZATION: ContextVar[str | None] = ContextVar("caller_authorization", default=None)
"""The ``Authorization`` header of the request being served: a run is submitted to the
dispatcher on the caller's behalf, with the caller's API key (none: none is sent)."""


def _on_behalf() -> dict[str, str]:
    authorization = CALLER_AUTHORIZATION.get()
    return {"authorization": authorization} if authorization else {}


class Runs:
    def __init__(self, store: EventReader, dispatcher: httpx.AsyncClient, settings: Settings) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings

    # -- the original --------------------------------------------------------------------------

    async def load(self, task_id: str) -> TaskHistory:
        limit = self.settings.max_task_events
        rows = await self.store.task_rows(task_id, limit + 1)
        if not rows:
            raise NotFound(f"no events for task {task_id!r}")
        if len(rows) > limit:
            raise Invalid(f"task {task_id!r} has more than {limit} events: too large to replay")
        record = task_history(task_id, ((row["kind"], row["time"], event_of(row)) for row in rows))
        if record.parameters is None or record.agent is None or record.status not in TERMINAL_STATUSES:
            task = await self._dispatcher_task(task_id)
            if task is not None:
                if record.parameters is None:
                    record.parameters = task.parameters
                record.agent = record.agent or task.target_agent
            if record.status not in TERMINAL_STATUSES:
                status = task.status.value if task is not None else record.status
                if status in TERMINAL_STATUSES:
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

    async def _dispatcher_task(self, task_id: str) -> Task | None:
        try:
            response = await self.dispatcher.get(f"/api/tasks/{task_id}", timeout=10, headers=_on_behalf())
        except httpx.HTTPError as exc:
            log.info("dispatcher lookup of %s failed: %r", task_id, exc)
            return None
        if response.status_code != 200:
            return None
        try:
            return Task.model_validate_json(response.content)
        except ValidationError as exc:
            log.info("dispatcher answered an invalid task for %s: %s", task_id, validation_reason(exc))
            return None

    async def children(self, record: TaskHistory) -> list[TaskHistory]:
        if not record.trace_id:
            return []
        rows = await self.store.child_rows(record.trace_id, record.task_id, self.settings.max_task_events)
        grouped: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {}
        for row in rows:
            if row["task_id"]:
                grouped.setdefault(row["task_id"], []).append((row["kind"], row["time"], event_of(row)))
        return [task_history(task_id, child_rows) for task_id, child_rows in grouped.items()]

    # -- deterministic replay ------------------------------------------------------------------

    async def deterministic(
        self, task_id: str, overrides: Overrides | None, wait_s: float | None
    ) -> tuple[int, dict[str, Any]]:
        record = await self.load(task_id)
        recording = build_recording(record, await self.children(record))
        replayed = overrides.apply(recording) if overrides is not None else recording
        spec = ReplaySpec(mode=ReplayMode.DETERMINISTIC, recording=replayed, original_task_id=task_id)
        metadata = {REPLAY_METADATA_KEY: spec.to_wire()}
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
        if task.status not in TERMINAL_STATUSES:
            RUNS.labels("deterministic", "pending").inc()
            body["reason"] = (
                f"the replay task is {task.status.value}: poll the dispatcher for task {task.task_id}"
            )
            return 202, body
        report = _report_of(task)
        if report is None:
            RUNS.labels("deterministic", "error").inc()
            raise Upstream(
                f"the replay task {task.task_id} ended {task.status.value} without a replay report"
                + (f": {task.error}" if task.error else " (does the worker run the replay hook?)")
            )
        body.update(
            diverged=report.diverged,
            step=report.step,
            at=report.at,
            reason=report.reason,
            expected=report.expected,
            got=report.got,
        )
        body["replay"]["report"] = report.model_dump(mode="json", by_alias=True)
        if report.at == "llm" and isinstance(report.got, dict):
            index = report.got.get("messageIndex")
            messages = conversation(recording, (record.parameters or {}).get("prompt"))
            if isinstance(index, int) and 0 <= index < len(messages) and isinstance(body["expected"], dict):
                body["expected"] = {**body["expected"], **messages[index]}
        RUNS.labels("deterministic", "diverged" if report.diverged else "same").inc()
        return 200, body

    # -- fork ----------------------------------------------------------------------------------

    async def fork(
        self, task_id: str, from_step: int, changes: dict[str, Any], wait_s: float | None
    ) -> tuple[int, dict[str, Any]]:
        record = await self.load(task_id)
        recording = build_recording(record, await self.children(record))
        steps = recording.steps
        if not 1 <= from_step <= steps:
            raise Invalid(f"from_step must be in 1..{steps}: task {task_id!r} has {steps} step(s)")
        parameters = dict(record.parameters or {})
        parameters.update(changes.get("parameters") or {})
        if changes.get("prompt") is not None:
            parameters["prompt"] = changes["prompt"]
        if changes.get("script") is not None:
            parameters["script"] = [RECORDED_STEP] * (from_step - 1) + list(changes["script"])
        try:
            worker_changes = ForkChanges.model_validate(changes)
        except ValidationError as exc:
            raise Invalid(f"changes: {validation_reason(exc)}") from None
        spec = ReplaySpec(
            mode=ReplayMode.FORK,
            from_step=from_step,
            recording=recording,
            original_task_id=task_id,
            changes=worker_changes,
        )
        metadata = {"forkOf": task_id, REPLAY_METADATA_KEY: spec.to_wire()}
        task = await self.submit(record, parameters, metadata, wait_s)
        original, forked = summary_of_record(record), summary_of_task(task)
        done = task.status in TERMINAL_STATUSES
        RUNS.labels("fork", task.status.value).inc()
        return (200 if done else 202), {
            "fromStep": from_step,
            "changes": {k: v for k, v in changes.items() if v is not None},
            "original": original,
            "fork": forked,
            "comparison": compare(original, forked) if done else None,
        }

    # -- the dispatcher ------------------------------------------------------------------------

    async def submit(
        self, record: TaskHistory, parameters: dict[str, Any], metadata: dict[str, Any], wait_s: float | None
    ) -> Task:
        """Submit a new task to the original's agent and wait for its outcome (up to ``wait_s``).

        No traceparent is sent: the dispatcher starts a new trace, so nothing the run emits
        lands in the original's trace.
        """
        wait = self.settings.run_wait_s if wait_s is None else wait_s
        try:
            submission = TaskSubmission(
                target_agent=record.agent, source_agent="replay", parameters=parameters, metadata=metadata
            )
        except ValidationError as exc:
            raise Invalid(
                f"task {record.task_id!r} cannot be submitted again: {validation_reason(exc)}"
            ) from None
        try:
            response = await self.dispatcher.post(
                "/api/tasks",
                params={"wait": wait},
                json=submission.to_wire(),
                timeout=wait + 15,
                headers=_on_behalf(),
            )
        except httpx.HTTPError as exc:
            raise Upstream(f"the dispatcher at {self.dispatcher.base_url} is unreachable: {exc!r}") from None
        if 400 <= response.status_code < 500:
            raise Refused(
                response.status_code,
                f"the dispatcher refused the task: HTTP {response.status_code}: {response.text[:500]}",
            )
        if response.status_code >= 400:
            raise Upstream(
                f"the dispatcher refused the task: HTTP {response.status_code}: {response.text[:500]}"
            )
        try:
            return Task.model_validate_json(response.content)
        except ValidationError as exc:
            raise Upstream(f"the dispatcher answered an invalid task: {validation_reason(exc)}") from None


def _report_of(task: Task) -> ReplayReport | None:
    """The replay report a completed deterministic replay carries in ``result.replay``."""
    result = task.result if isinstance(task.result, dict) else {}
    if task.status is not TaskStatus.COMPLETED or not isinstance(result.get("replay"), dict):
        return None
    try:
        return ReplayReport.model_validate(result["replay"])
    except ValidationError:
        return None


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
