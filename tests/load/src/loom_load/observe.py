"""What the harness hears on NATS while it runs: final statuses and the tasks' CloudEvents.

Core-NATS subscriptions, filtered to this run's tasks (their ids start with the run's prefix):

* ``loom.task.status.*`` -- the dispatcher's announcements; its ``final: true`` one resolves the
  task's waiter (always subscribed);
* ``loom.task.report.*.*`` -- the workers' ``running`` and outcome reports;
* ``loom.task.assigned.*`` -- the assignment (its ``updatedAt`` is when the dispatcher decided);
* ``loom.event.>`` -- ``task.submitted`` / ``task.assigned`` (dispatcher) and every event the
  agents emit, counted per task (a child task's events count for its parent).

The last three are left during the phases compared with a peer (:meth:`Observer.hush`,
cli.QUIET_PHASES) and taken again after them (:meth:`Observer.listen`).

Timestamps from other processes (CloudEvent ``time``, status ``at``) are wall-clock; all
processes share this machine's clock, so differences between them are meaningful.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loom_nats import flushed
from loom_protocol import TERMINAL_STATUSES, subjects

from .stats import Latency, Timeline

log = logging.getLogger(__name__)

_STATUS_PREFIX = subjects.TASK_STATUS_ALL[:-1]  # "loom.task.status."
_ASSIGNED_ALL = subjects.TASK_ASSIGNED_ALL
TERMINAL = TERMINAL_STATUSES

HOPS = (
    ("submit→submitted", "t_submit", "ev_submitted"),
    ("submitted→assigned", "ev_submitted", "assigned"),
    ("assigned→running", "assigned", "st_running"),
    ("running→done", "st_running", "st_done"),
    ("done→final", "st_done", "st_final"),
    ("final→client", "st_final", "t_final_recv"),
)
"""Per-hop latencies: (name, from, to) over :class:`Trace` fields.

``submitted`` is the dispatcher's ``task.submitted`` CloudEvent (emitted once the task is
stored); ``assigned`` the moment the dispatcher assigned it (the assignment's ``updatedAt``,
else its ``task.assigned`` event, which is emitted after the assignment is published); there is
no ``task.started`` event, so the worker's ``running`` report stands for it; ``done`` is
the worker's outcome report and ``final`` the dispatcher's announcement of the terminal state."""


@dataclass(slots=True)
class Trace:
    t_submit: float | None = None
    ev_submitted: float | None = None
    assigned: float | None = None
    st_running: float | None = None
    st_done: float | None = None
    st_final: float | None = None
    t_final_recv: float | None = None
    events: int = 0


def phase_of(task_id: str, prefix: str) -> str:
    """The phase a task of this run belongs to: its id is ``<prefix><phase>-<n>``."""
    return task_id.removeprefix(prefix).rsplit("-", 1)[0]


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp as epoch seconds, or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def hop_latencies(traces: Mapping[str, Trace], task_ids: Sequence[str]) -> dict[str, Latency]:
    """One histogram per hop (and end to end), over the tasks that have both ends of it."""
    out: dict[str, Latency] = {name: Latency() for name, _, _ in HOPS}
    out["end to end"] = Latency()
    for task_id in task_ids:
        trace = traces.get(task_id)
        if trace is None:
            continue
        for name, start, end in HOPS:
            a, b = getattr(trace, start), getattr(trace, end)
            if a is not None and b is not None:
                out[name].record(b - a)
        if trace.t_submit is not None and trace.t_final_recv is not None:
            out["end to end"].record(trace.t_final_recv - trace.t_submit)
    return out


EventSink = Callable[[str, float, str, str | None], None]
"""Called for every CloudEvent of this run with (event id, event time, source, the phase of the
run's task it belongs to or None)."""


class Observer:
    def __init__(self, prefix: str, burst_source: str) -> None:
        self.prefix = prefix
        self._prefix_bytes = prefix.encode()
        self._burst_source = burst_source
        self._burst_bytes = burst_source.encode()
        self.traces: dict[str, Trace] = {}
        self.finals: dict[str, tuple[str, float]] = {}  # task id -> (status, perf_counter at receipt)
        self._waiters: dict[str, asyncio.Future[tuple[str, float]]] = {}
        self.sinks: list[EventSink] = []
        self.events_seen = 0
        self.task_events = 0  # events of this run's tasks (the ingest burst's excluded)
        self.events_by_phase: Counter[str] = Counter()  # of this run's tasks, by their phase
        self.events_timeline = Timeline(time.perf_counter(), bucket_s=1.0)
        self.status_msgs = 0
        self._subs: list[Any] = []  # the statuses'
        self._listening: list[Any] = []  # the reports', events' and assignments' (listen/hush)
        self._nc: Any = None

    async def start(self, nc: Any, *, status_only: bool = False) -> None:
        """Subscribe; ``status_only``: only to the statuses (a client process that needs its tasks'
        final status and leaves the events and assignments to the harness's own observer)."""
        self._nc = nc
        self._subs.append(
            await nc.subscribe(subjects.TASK_STATUS_ALL, cb=self._on_status, pending_msgs_limit=1_000_000)
        )
        if status_only:
            await flushed(nc)
        else:
            await self.listen()  # flushes

    async def listen(self) -> None:
        """Hear the reports, events and assignments too (the per-hop figures and the events)."""
        if self._listening or self._nc is None:
            return
        nc = self._nc
        self._listening = [
            # the workers' own reports: when each attempt ran and ended
            await nc.subscribe(subjects.TASK_REPORT_ALL, cb=self._on_status, pending_msgs_limit=1_000_000),
            await nc.subscribe(subjects.EVENT_ALL, cb=self._on_event, pending_msgs_limit=1_000_000),
            await nc.subscribe(_ASSIGNED_ALL, cb=self._on_assigned, pending_msgs_limit=1_000_000),
        ]
        await flushed(nc)

    async def hush(self) -> None:
        """Hear the final statuses only, as a client that waits for its tasks' outcomes does.

        For the phases compared with a peer's client: each task's reports, events and
        assignment cost the harness more CPU than its own submission and outcome, on the cores
        the stack runs on. Their tasks' per-hop figures are then not measured (cli.HOPS_PHASE
        measures them), and their events' ingest lag is read from the database
        (:meth:`LagTracker.read_after`)."""
        subs, self._listening = self._listening, []
        await self._unsubscribe(subs)
        if subs:
            await flushed(self._nc)

    async def stop(self) -> None:
        subs, self._listening = self._subs + self._listening, []
        self._subs = []
        await self._unsubscribe(subs)

    @staticmethod
    async def _unsubscribe(subs: list[Any]) -> None:
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 -- the connection may be gone already
                log.debug("unsubscribe failed", exc_info=True)

    def trace(self, task_id: str) -> Trace:
        trace = self.traces.get(task_id)
        if trace is None:
            trace = self.traces[task_id] = Trace()
        return trace

    def watch(self, task_id: str) -> asyncio.Future[tuple[str, float]]:
        """A future resolved with (status, perf_counter at receipt) by the task's final status."""
        fut: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        known = self.finals.get(task_id)
        if known is not None:
            fut.set_result(known)
        else:
            self._waiters[task_id] = fut
        return fut

    def unwatch(self, task_id: str) -> None:
        fut = self._waiters.pop(task_id, None)
        if fut is not None and not fut.done():
            fut.cancel()

    async def _on_status(self, msg: Any) -> None:
        subject: str = msg.subject
        task_id = subject.rsplit(".", 1)[-1]
        if not task_id.startswith(self.prefix):
            return
        report = not subject.startswith(_STATUS_PREFIX)
        if not report:
            self.status_msgs += 1
        try:
            change = json.loads(msg.data)
        except ValueError:
            return
        status = change.get("status")
        if not isinstance(status, str):
            return
        at = parse_time(change.get("at"))
        trace = self.trace(task_id)
        if change.get("final"):
            received = time.perf_counter()
            trace.st_final = at
            trace.t_final_recv = time.time()
            if task_id not in self.finals:
                self.finals[task_id] = (status, received)
            fut = self._waiters.pop(task_id, None)
            if fut is not None and not fut.done():
                fut.set_result((status, received))
        elif not report:
            return  # the dispatcher's word on a status on the way: the report came first
        elif status == "running":
            trace.st_running = at
        elif status in TERMINAL:
            trace.st_done = at

    async def _on_assigned(self, msg: Any) -> None:
        data: bytes = msg.data
        if self._prefix_bytes not in data:
            return
        try:
            task = json.loads(data)
        except ValueError:
            return
        task_id = task.get("taskId")
        at = parse_time(task.get("updatedAt"))
        if not isinstance(task_id, str) or not task_id.startswith(self.prefix) or at is None:
            return
        trace = self.trace(task_id)
        trace.assigned = at if trace.assigned is None else min(trace.assigned, at)

    async def _on_event(self, msg: Any) -> None:
        data: bytes = msg.data
        if self._prefix_bytes not in data and self._burst_bytes not in data:
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        event_id = event.get("id")
        at = parse_time(event.get("time"))
        if not isinstance(event_id, str) or at is None:
            return
        source = event.get("source") or ""
        self.events_seen += 1
        if not source.startswith(self._burst_source):  # the burst's and the live feed's synthetic ones
            self.task_events += 1
        self.events_timeline.add(time.perf_counter())
        task_id = event.get("taskid")
        parent = event.get("parenttaskid")
        phase: str | None = None  # of the run's task the event belongs to
        if isinstance(task_id, str) and task_id.startswith(self.prefix):
            phase = phase_of(task_id, self.prefix)
            trace = self.trace(task_id)
            trace.events += 1
            kind = event.get("type")
            if kind == "task.submitted":
                trace.ev_submitted = at
            elif kind == "task.assigned":
                trace.assigned = at if trace.assigned is None else min(trace.assigned, at)
        elif isinstance(parent, str) and parent.startswith(self.prefix):
            phase = phase_of(parent, self.prefix)
            self.trace(parent).events += 1
        if phase is not None:
            self.events_by_phase[phase] += 1
        for sink in self.sinks:
            sink(event_id, at, source, phase)
