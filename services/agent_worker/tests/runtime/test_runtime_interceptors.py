from __future__ import annotations

import logging

import pytest
from loom_agent_worker.runtime import (
    Agent,
    LoggingInterceptor,
    MetricsInterceptor,
    TimingInterceptor,
    run_with_interceptors,
)
from loom_protocol import AgentCard, Task, TaskStatus


class ScriptedAgent(Agent):
    """A fake agent: completes, raises or misbehaves as told, appending to a shared log."""

    def __init__(self, log: list[str], behaviour: str = "complete") -> None:
        self.agent_card = AgentCard(agent_id="subject", name="Subject")
        self._log = log
        self._behaviour = behaviour

    async def execute_task(self, task: Task, ctx) -> Task:
        self._log.append("execute")
        if self._behaviour == "raise":
            raise RuntimeError("boom")
        if self._behaviour == "non-terminal":
            return task
        return task.with_status(TaskStatus.COMPLETED, result={"ok": True})


class Hook:
    def __init__(
        self, name: str, log: list[str], *, fail_before: bool = False, fail_after: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.seen: list[tuple[Task | None, BaseException | None, float]] = []

    async def before(self, task, ctx) -> None:
        self.log.append(f"before:{self.name}")
        if self.fail_before:
            raise ValueError(f"{self.name} refused")

    async def after(self, task, ctx, ended) -> None:
        self.log.append(f"after:{self.name}")
        self.seen.append((ended.result, ended.error, ended.duration_s))
        if self.fail_after:
            raise ValueError("after hook bug")


async def test_before_in_order_after_in_reverse(new_task, new_context) -> None:
    log: list[str] = []
    hooks = [Hook("a", log), Hook("b", log), Hook("c", log)]
    task = new_task("subject")
    done = await run_with_interceptors(ScriptedAgent(log), task, new_context(task), hooks)
    assert done.status is TaskStatus.COMPLETED
    assert log == ["before:a", "before:b", "before:c", "execute", "after:c", "after:b", "after:a"]
    result, error, duration_s = hooks[0].seen[0]
    assert result is done and error is None and duration_s >= 0


async def test_agent_exception_becomes_a_failed_task_and_an_error_event(new_task, new_context) -> None:
    log: list[str] = []
    hook = Hook("a", log)
    task = new_task("subject")
    ctx = new_context(task)
    done = await run_with_interceptors(ScriptedAgent(log, "raise"), task, ctx, [hook])
    assert done.status is TaskStatus.FAILED
    assert done.error == "RuntimeError: boom"
    assert done.task_id == task.task_id
    (event,) = ctx.events.events
    assert (event.type, event.data) == ("error", {"error": "RuntimeError: boom", "exception": "RuntimeError"})
    result, error, _ = hook.seen[0]
    assert result is done
    assert isinstance(error, RuntimeError)


async def test_failing_before_hook_fails_the_task_and_only_entered_hooks_get_after(
    new_task, new_context
) -> None:
    log: list[str] = []
    hooks = [Hook("a", log), Hook("b", log, fail_before=True), Hook("c", log)]
    task = new_task("subject")
    done = await run_with_interceptors(ScriptedAgent(log), task, new_context(task), hooks)
    assert done.status is TaskStatus.FAILED
    assert done.error == "ValueError: b refused"
    assert log == ["before:a", "before:b", "after:a"]


async def test_failing_after_hook_does_not_change_the_outcome(new_task, new_context) -> None:
    log: list[str] = []
    hooks = [Hook("a", log), Hook("b", log, fail_after=True)]
    task = new_task("subject")
    done = await run_with_interceptors(ScriptedAgent(log), task, new_context(task), hooks)
    assert done.status is TaskStatus.COMPLETED
    assert log[-2:] == ["after:b", "after:a"]


async def test_non_terminal_result_is_turned_into_a_failure(new_task, new_context) -> None:
    task = new_task("subject")
    done = await run_with_interceptors(ScriptedAgent([], "non-terminal"), task, new_context(task), [])
    assert done.status is TaskStatus.FAILED
    assert "returned task" in done.error and "'running'" in done.error


async def test_timing_and_metrics_interceptors(new_task, new_context) -> None:
    callbacks: list[tuple[str, float]] = []
    observed: list[tuple[str, str, float]] = []
    timing = TimingInterceptor(lambda agent, d: callbacks.append((agent, d)))
    metrics = MetricsInterceptor(lambda agent, status, d: observed.append((agent, status, d)))
    for behaviour in ("complete", "raise", "complete"):
        task = new_task("subject")
        await run_with_interceptors(ScriptedAgent([], behaviour), task, new_context(task), [timing, metrics])
    stats = timing.stats["subject"]
    assert stats.count == 3
    assert stats.total_s == pytest.approx(sum(d for _, d in callbacks))
    assert stats.max_s == max(d for _, d in callbacks)
    assert stats.last_s == callbacks[-1][1]
    assert stats.mean_s == pytest.approx(stats.total_s / 3)
    assert [(agent, status) for agent, status, _ in observed] == [
        ("subject", "completed"),
        ("subject", "failed"),
        ("subject", "completed"),
    ]


async def test_logging_interceptor_logs_start_and_end(new_task, new_context, caplog) -> None:
    task = new_task("subject")
    with caplog.at_level(logging.INFO, logger="loom_agent_worker.runtime.interceptors"):
        await run_with_interceptors(
            ScriptedAgent([], "raise"), task, new_context(task), [LoggingInterceptor()]
        )
    messages = [r.getMessage() for r in caplog.records]
    assert f"task {task.task_id} started on agent subject" in messages
    assert any(m.startswith(f"task {task.task_id} on agent subject ended failed in ") for m in messages)
