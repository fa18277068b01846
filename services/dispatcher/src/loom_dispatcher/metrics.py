"""The dispatcher's Prometheus metrics (RED for tasks, per hop and end to end)."""

from __future__ import annotations

import functools
import time
from typing import TypeVar

from loom_protocol import Task
from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

TASKS_SUBMITTED = Counter("loom_tasks_submitted_total", "Tasks accepted by the dispatcher", ["agent"])
TASKS_DISPATCHED = Counter(
    "loom_tasks_dispatched_total", "Dispatches to an instance (one per attempt)", ["agent"]
)
TASKS_RETRIED = Counter("loom_tasks_retried_total", "Tasks put back for another attempt", ["agent"])
TASKS_ENDED = Counter(
    "loom_tasks_ended_total", "Tasks that reached their terminal state", ["agent", "status"]
)
TASKS_COMPLETED = Counter("loom_tasks_completed_total", "Tasks completed", ["agent"])
TASKS_FAILED = Counter("loom_tasks_failed_total", "Tasks failed", ["agent"])
TASKS_DEAD = Counter("loom_tasks_dead_total", "Tasks dead-lettered", ["agent"])
REPORTS_SUPERSEDED = Counter(
    "loom_dispatcher_reports_superseded_total",
    "Worker reports acknowledged without effect: from an attempt no longer current, or after the end",
    ["status"],
)
STRIKES = Counter(
    "loom_dispatcher_strikes_total", "Attempts that timed out or failed, counted against their instance"
)
SUBMISSIONS_REJECTED = Counter("loom_dispatcher_rejected_total", "Malformed submissions dead-lettered")
# never labelled by the agent: the names counted here are the ones nobody ever ran
UNKNOWN_AGENT = Counter(
    "loom_dispatcher_unknown_agent_total",
    "Submissions refused (http: 404) or dead-lettered (nats) for an agent the registry never saw",
    ["path"],
)
CONFLICTS = Counter(
    "loom_dispatcher_conflicts_total", "Resubmissions of a known task id with a different body", ["path"]
)
E2E = Histogram(
    "loom_task_e2e_seconds", "Task creation to terminal state", ["agent", "status"], buckets=_BUCKETS
)
QUEUED = Histogram(
    "loom_task_queue_seconds", "Task creation (or hand-back) to dispatch", ["agent"], buckets=_BUCKETS
)


# every ``agent`` label below is given by the caller: the agent id when the registry knows it,
# else admission.UNKNOWN_AGENT_LABEL (a task waiting for an agent not seen yet)


@functools.cache
def child(metric: M, *values: str) -> M:
    """``metric.labels(*values)``, looked up once per label values: ``labels`` takes a lock and
    checks its values on every call, six times per task. The values are bounded (agents the
    registry knows, the unknown-agent label, statuses) and no child is ever removed."""
    return metric.labels(*values)


def observe_dispatched(task: Task, agent: str) -> None:
    child(TASKS_DISPATCHED, agent).inc()
    if task.attempt == 1:
        child(QUEUED, agent).observe(max(0.0, time.time() - task.created_at.timestamp()))


_BY_STATUS = {"completed": TASKS_COMPLETED, "failed": TASKS_FAILED, "dead": TASKS_DEAD}


def observe_terminal(task: Task, agent: str) -> None:
    status = task.status.value
    child(TASKS_ENDED, agent, status).inc()
    counter = _BY_STATUS.get(status)
    if counter is not None:
        child(counter, agent).inc()
    child(E2E, agent, status).observe(max(0.0, time.time() - task.created_at.timestamp()))
