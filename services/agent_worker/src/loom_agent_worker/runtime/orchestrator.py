"""The orchestrator (the Concierge/Orchestrator/Action pattern, over child tasks).

It plans (takes ``parameters.plan`` or splits the prompt into sub-requests and routes each
one: arithmetic to ``calculator``, anything else to ``echo``), delegates every step as a
child task, runs them concurrently, notes their results in memory and combines the answers.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from loom_protocol import (
    AgentAction,
    AgentAnswer,
    AgentCard,
    AgentThought,
    ErrorReported,
    MemoryTier,
    Task,
    TaskStatus,
)
from loom_protocol.base import AgentId
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loom_agent_worker.runtime.agent import Agent, completed, failed
from loom_agent_worker.runtime.context import TaskContext
from loom_agent_worker.runtime.providers.scripted import extract_expression
from loom_agent_worker.runtime.tools import describe_validation_error

MAX_PLAN_STEPS = 32
DEFAULT_CHILD_TIMEOUT_S = 60.0
CHILD_RESULT_IMPORTANCE = 0.8
_SPLIT_RE = re.compile(r"\s*;\s*|\s+and\s+", re.IGNORECASE)


class PlanStep(BaseModel):
    """One delegation: which agent, with which parameters."""

    model_config = ConfigDict(extra="forbid")

    agent: AgentId
    parameters: dict[str, Any] = Field(default_factory=dict)


class OrchestratorParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    plan: list[PlanStep] | None = Field(default=None, max_length=MAX_PLAN_STEPS)
    tolerate_failures: bool = False
    child_timeout_s: float = Field(default=DEFAULT_CHILD_TIMEOUT_S, gt=0, le=3600)


def plan_from_prompt(prompt: str) -> list[PlanStep]:
    """Split on ``;`` or `` and `` and route each part: arithmetic -> calculator, else echo."""
    parts = [part.strip() for part in _SPLIT_RE.split(prompt)]
    return [
        PlanStep(agent="calculator" if extract_expression(part) else "echo", parameters={"prompt": part})
        for part in parts
        if part
    ]


def answer_of(result: Any) -> str:
    """The answer text of a child's result (``answer``, or the echoed ``prompt``/``text``)."""
    if isinstance(result, dict):
        for key in ("answer", "prompt", "text"):
            if key in result:
                return str(result[key])
        return json.dumps(result, default=str)
    if isinstance(result, str):
        return result
    return "" if result is None else json.dumps(result, default=str)


class OrchestratorAgent(Agent):
    """Plans, delegates to other agents as child tasks and combines their answers.

    Result: ``{"answer": "a; b", "children": [{"task_id", "agent", "status", "answer",
    "error"}]}``. A child that does not complete fails the orchestrator with the child's
    error unless ``parameters.tolerate_failures`` is true.
    """

    def __init__(self, card: AgentCard) -> None:
        self.agent_card = card

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        try:
            params = OrchestratorParameters.model_validate(task.parameters)
        except ValidationError as exc:
            return self._fail(task, ctx, f"invalid parameters: {describe_validation_error(exc)}")
        plan = params.plan if params.plan is not None else plan_from_prompt(params.prompt)
        if not plan:
            return self._fail(task, ctx, "nothing to do: give a non-empty prompt or plan")
        if len(plan) > MAX_PLAN_STEPS:
            return self._fail(
                task, ctx, f"the plan has {len(plan)} steps; at most {MAX_PLAN_STEPS} are allowed"
            )

        summary = "; ".join(f"{step.agent} <- {json.dumps(step.parameters, default=str)}" for step in plan)
        ctx.events.emit(
            AgentThought(
                content=f"plan of {len(plan)} step(s): {summary}", plan=[s.model_dump() for s in plan]
            )
        )
        for index, step in enumerate(plan):
            ctx.events.emit(
                AgentAction(index=index, agent=step.agent, parameters=step.parameters),
                subject=f"agent:{step.agent}",
            )

        outcomes = await asyncio.gather(*(self._delegate(ctx, step, params.child_timeout_s) for step in plan))

        children = [_child_record(step, outcome) for step, outcome in zip(plan, outcomes, strict=True)]
        for child in children:
            ok = child["status"] == TaskStatus.COMPLETED.value
            ctx.note(
                f"{child['agent']} answered: {child['answer']}"
                if ok
                else f"{child['agent']} {child['status']}: {child['error']}",
                tier=MemoryTier.SESSION,
                importance=CHILD_RESULT_IMPORTANCE,
                role="child_result",
            )
        ctx.consolidate()

        failures = [child for child in children if child["status"] != TaskStatus.COMPLETED.value]
        if failures and not params.tolerate_failures:
            first = failures[0]
            return self._fail(
                task,
                ctx,
                f"child task {first['task_id']} on agent {first['agent']!r} ended {first['status']}: "
                f"{first['error']}",
            )
        answer = "; ".join(
            child["answer"]
            if child["status"] == TaskStatus.COMPLETED.value
            else f"[{child['agent']} {child['status']}: {child['error']}]"
            for child in children
        )
        ctx.events.emit(AgentAnswer(answer=answer, children=len(children)))
        return completed(task, {"answer": answer, "children": children})

    @staticmethod
    async def _delegate(ctx: TaskContext, step: PlanStep, timeout_s: float) -> Task | Exception:
        try:
            return await ctx.children.run(step.agent, step.parameters, timeout_s=timeout_s)
        except Exception as exc:  # the delegation itself failed (timeout, transport): a failed child
            return exc

    def _fail(self, task: Task, ctx: TaskContext, error: str) -> Task:
        ctx.events.emit(ErrorReported(error=error))
        return failed(task, error)


def _child_record(step: PlanStep, outcome: Task | Exception) -> dict[str, Any]:
    if isinstance(outcome, Exception):
        return {
            "task_id": None,
            "agent": step.agent,
            "status": TaskStatus.FAILED.value,
            "answer": None,
            "error": f"delegation failed: {type(outcome).__name__}: {outcome}",
        }
    ok = outcome.status == TaskStatus.COMPLETED
    return {
        "task_id": outcome.task_id,
        "agent": step.agent,
        "status": outcome.status.value,
        "answer": answer_of(outcome.result) if ok else None,
        "error": None
        if ok
        else (outcome.error or f"child ended {outcome.status.value} without an error message"),
    }
