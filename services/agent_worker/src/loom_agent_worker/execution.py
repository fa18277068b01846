"""Running assigned tasks: concurrency limit, status reports, cancellation and drain."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from loom_protocol import (
    APPROVAL_TOOLS_KEY,
    RESUME_KEY,
    InstanceLoad,
    Task,
    TaskAction,
    TaskResumed,
    TaskStatus,
)
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from . import replay_agents
from .emitter import EventEmitter
from .journal import ENTRIES_RESTORED, JournalUnavailable, KvJournal
from .reporting import ReportNotSent, StatusReporter
from .runtime import (
    Agent,
    AnswerStream,
    ChildTasks,
    Interceptor,
    MemoryStore,
    TaskContext,
    run_with_interceptors,
)
from .runtime.durable import AwaitingApproval, StepJournal
from .runtime.memory import SessionMemory, SessionStore
from .telemetry import TRACING, context_of, tracer

log = logging.getLogger(__name__)

TASKS = Counter("loom_worker_tasks_total", "Tasks finished by this worker", ["agent", "status"])
IN_FLIGHT = Gauge("loom_worker_in_flight", "Tasks accepted and not yet finished")
DURATION = Histogram("loom_worker_task_seconds", "Task execution time", ["agent"])
SUPERSEDED = Counter(
    "loom_worker_superseded_total", "Attempts stopped because the dispatcher superseded them"
)
RESUMED = Counter("loom_worker_tasks_resumed_total", "Attempts that restored steps of earlier attempts")


@dataclass(frozen=True)
class Running:
    task: Task
    job: asyncio.Task[None]


@dataclass(eq=False)
class Executor:
    instance_id: str
    agents: dict[str, Agent]
    reporter: StatusReporter
    emitter: EventEmitter
    children: Callable[[Task, str, StepJournal], ChildTasks]
    interceptors: Sequence[Interceptor]
    concurrency: int
    capture_content: bool = True
    memory: SessionStore = field(default_factory=MemoryStore)  # the app passes the shared KV store
    answer_stream: Callable[[Task], AnswerStream] | None = None  # chunks of action "stream" tasks
    journal: KvJournal | None = None  # None: no attempt restores another's steps
    approval_tools: frozenset[str] = frozenset()  # tools that need approval on this worker
    running_report_after_s: float = 0.0  # 0: report running at once (reporting.py: why later)
    draining: bool = field(default=False, init=False)
    _slots: asyncio.Semaphore = field(init=False)
    _running: dict[str, Running] = field(default_factory=dict, init=False)
    _superseded: set[tuple[str, int]] = field(default_factory=set, init=False)  # (task id, attempt)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)

    def _answer_stream(self, task: Task) -> AnswerStream | None:
        if self.answer_stream is None or task.action != TaskAction.STREAM:
            return None
        return self.answer_stream(task)

    @property
    def load(self) -> InstanceLoad:
        return InstanceLoad(in_flight=len(self._running), capacity=self.concurrency)

    async def accept(self, task: Task) -> None:
        """Take an assigned task (returns at once; the task runs in the background)."""
        if self.draining:
            await self.reporter.report(task, TaskStatus.PENDING, error="handed back: worker draining")
            return
        current = self._running.get(task.task_id)
        if current is not None and current.task.attempt >= task.attempt:
            return  # a duplicate delivery of what we already run
        # replay: a task with metadata.replay runs its agent against a recording (replay_agents.py)
        agent = replay_agents.agent_for(task, self.agents) or self.agents.get(task.target_agent)
        if agent is None:
            await self.reporter.report(
                task,
                TaskStatus.FAILED,
                error=f"agent {task.target_agent!r} is not hosted by {self.instance_id}",
            )
            return
        job = asyncio.create_task(self._run(agent, task), name=f"task-{task.task_id}")
        self._running[task.task_id] = Running(task, job)
        IN_FLIGHT.set(len(self._running))
        job.add_done_callback(lambda _: self._forget(task))

    def _forget(self, task: Task) -> None:
        current = self._running.get(task.task_id)
        if current is not None and current.task.attempt == task.attempt:
            del self._running[task.task_id]
        self._superseded.discard((task.task_id, task.attempt))
        IN_FLIGHT.set(len(self._running))

    def cancel(self, task_id: str) -> bool:
        running = self._running.get(task_id)
        if running is None:
            return False
        running.job.cancel()
        return True

    def supersede(self, task_id: str, attempt: int) -> bool:
        """Stop this instance's copy of ``task_id`` if it runs ``attempt`` or an earlier one: the
        dispatcher gave the task up or to another attempt. Nothing is reported for it (no report of
        a superseded attempt counts); its recorded steps stay in the journal for the next one."""
        running = self._running.get(task_id)
        if running is None or running.task.attempt > attempt:
            return False
        self._superseded.add((task_id, running.task.attempt))
        SUPERSEDED.inc()
        running.job.cancel()
        return True

    def _is_superseded(self, task: Task) -> bool:
        return (task.task_id, task.attempt) in self._superseded

    async def _run(self, agent: Agent, task: Task) -> None:
        if not TRACING:  # no span to make: the no-op tracer's would cost a few per cent per task
            await self._run_traced(agent, task)
            return
        # parent: the span of the assigned message when traced, else the task's recorded trace
        parent = None if trace.get_current_span().get_span_context().is_valid else context_of(task.trace)
        with tracer.start_as_current_span(f"agent {agent.node_id}", context=parent) as span:
            span.set_attribute("loom.task_id", task.task_id)
            span.set_attribute("loom.attempt", task.attempt)
            await self._run_traced(agent, task)

    async def _run_traced(self, agent: Agent, task: Task) -> None:
        async with self._slots:
            started = time.perf_counter()
            status = TaskStatus.FAILED
            try:
                if self.running_report_after_s > 0:
                    self.reporter.report_running_after(task, self.running_report_after_s)
                else:
                    await self.reporter.report_running(task)
                status = await self._execute(agent, task)
            except asyncio.CancelledError:
                pass
            except ReportNotSent as exc:
                # the task ran (or stopped) and only its report is missing: never a second,
                # contradicting report; the deadline re-dispatches it, resuming from its journal
                status = exc.status
            except Exception:
                log.exception("task execution failed", extra={"task_id": task.task_id})
                with contextlib.suppress(Exception):
                    await self.reporter.report(
                        task, TaskStatus.FAILED, error="worker error while running task"
                    )
            finally:
                self.reporter.running_ended(task)
                TASKS.labels(agent.node_id, status.value).inc()
                DURATION.labels(agent.node_id).observe(time.perf_counter() - started)

    async def _execute(self, agent: Agent, task: Task) -> TaskStatus:
        """Run ``task`` on ``agent`` and report how it ended; returns the status reported."""
        # a task that shows progress is running: its running report goes before its first event
        running = functools.partial(self.reporter.report_running_now, task)
        events = self.emitter.for_task(task, agent.node_id, self.instance_id, on_first=running)
        try:
            journal = await self._journal_for(task)
        except JournalUnavailable as exc:
            events.close()
            log.warning("%s", exc, extra={"task_id": task.task_id})
            await self.reporter.report(task, TaskStatus.FAILED, error=str(exc))
            return TaskStatus.FAILED
        if task.attempt > 1 and journal.recorded_before:
            counts = journal.counts()
            RESUMED.inc()
            events.emit(
                TaskResumed(
                    attempt=task.attempt,
                    restored_steps=counts.total,
                    llm_steps=counts.llm,
                    tool_steps=counts.tools,
                    child_steps=counts.children,
                )
            )
        try:
            # a task without a session has a memory of its own, not stored
            memory = (
                await self.memory.load(task.session_id) if task.session_id else SessionMemory(task.task_id)
            )
        except Exception as exc:
            events.close()
            log.warning("session memory unavailable: %s", exc, extra={"task_id": task.task_id})
            await self.reporter.report(task, TaskStatus.FAILED, error=f"session memory unavailable: {exc}")
            return TaskStatus.FAILED
        stream = self._answer_stream(task)
        try:
            ctx = TaskContext(
                task=task,
                events=events,
                children=self.children(task, agent.node_id, journal),
                memory=memory,
                instance_id=self.instance_id,
                capture_content=self.capture_content,
                stream=stream,
                journal=journal,
                approval_tools=self._approval_tools(task),
            )
            try:
                done = await run_with_interceptors(agent, task, ctx, self.interceptors)
                if stream is not None:  # whatever the outcome: the answer ends
                    await stream.done()
            except AwaitingApproval as stop:
                # nothing of this attempt is saved: the next one restores its steps from the journal
                events.close()
                await self.reporter.report(task, TaskStatus.INPUT_REQUIRED, approval=stop.request)
                return TaskStatus.INPUT_REQUIRED
            except asyncio.CancelledError:
                events.close()
                if self._is_superseded(task):
                    log.info("superseded attempt stopped, not reported", extra={"task_id": task.task_id})
                    raise
                status = TaskStatus.PENDING if self.draining else TaskStatus.CANCELLED
                reason = "handed back: worker shutting down" if self.draining else "cancelled by request"
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.reporter.report(task, status, error=reason))
                raise
            try:  # before the terminal status: the session's next task reads these writes
                if task.session_id:
                    await self.memory.save(memory)
            except Exception:
                log.exception("session memory not saved", extra={"task_id": task.task_id})
        finally:
            if task.session_id:
                self.memory.release(memory)
        events.close()
        ENTRIES_RESTORED.inc(journal.restored.total)
        await self.reporter.report(task, done.status, result=done.result, error=done.error)
        return done.status

    async def _journal_for(self, task: Task) -> StepJournal:
        """The task's journal: restored from earlier attempts (attempt > 1) unless the task opts
        out (``metadata.resume: false``); replays never touch it (they answer from a recording)."""
        if self.journal is None or replay_agents.is_replay(task) or task.metadata.get(RESUME_KEY) is False:
            return StepJournal(attempt=task.attempt, instance_id=self.instance_id)  # this attempt only
        return await self.journal.for_task(
            task.task_id, attempt=task.attempt, instance_id=self.instance_id, restore=task.attempt > 1
        )

    def _approval_tools(self, task: Task) -> frozenset[str]:
        """Tool names that need approval in ``task``: the worker's and the task's own."""
        if replay_agents.is_replay(task):
            return frozenset()
        named = task.metadata.get(APPROVAL_TOOLS_KEY)
        extra = {name for name in named if isinstance(name, str)} if isinstance(named, list) else set()
        return self.approval_tools | extra

    async def drain(self, timeout_s: float) -> None:
        """Stop taking work, wait for in-flight tasks, then hand back what is left."""
        self.draining = True
        jobs = [r.job for r in self._running.values()]
        if jobs:
            log.info("draining %d in-flight tasks", len(jobs))
            _, pending = await asyncio.wait(jobs, timeout=timeout_s)
            for job in pending:
                job.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
