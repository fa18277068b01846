"""Replays and forks on the worker: tasks whose ``metadata.replay`` asks for one.

The replay service never imports the worker: it rebuilds a task's recording from the task's
events and submits a new task to the same agent with the original parameters and
``metadata.replay``, a :class:`loom_protocol.ReplaySpec` (mode, recording, originalTaskId, and
for a fork fromStep and changes).

The Executor asks :func:`agent_for` which agent runs a task; for such a task it gets a
wrapper that runs the real agent code (the same ReActAgent / OrchestratorAgent instance,
card, prompts and limits) with its LLM, tools and delegations answered from the recording:

* ``deterministic``: every LLM call, tool call and delegation comes from the recording, no
  provider or tool is called, and the task completes with ``result.replay``, a
  :class:`loom_protocol.ReplayReport`.
* ``fork``: LLM steps before ``fromStep`` (delegations before plan step ``fromStep``) come
  from the recording, later ones run live, optionally with another provider, model, tool set,
  system prompt or step limit (``changes``); the result is the agent's own plus ``result.fork``
  (a :class:`loom_protocol.ForkInfo`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from loom_protocol import (
    REPLAY_METADATA_KEY,
    ForkChanges,
    ForkInfo,
    Recording,
    ReplayCounts,
    ReplayMode,
    ReplayReport,
    ReplaySpec,
    Task,
    TaskStatus,
    validation_reason,
)
from pydantic import ValidationError

from .runtime import (
    Agent,
    LLMProvider,
    LLMResponse,
    ReActAgent,
    RecordedChildren,
    RecordedProvider,
    RecordedTools,
    ReplayDivergence,
    ScriptedProvider,
    SplicedProvider,
    SplicedTools,
    TaskContext,
    ToolRegistry,
    recorded_provider,
    recorded_response,
    recorded_tools,
)
from .runtime.agent import completed, failed
from .runtime.tools import ToolExecutor


def is_replay(task: Task) -> bool:
    """Whether ``task`` is a replay or a fork (``metadata.replay`` set)."""
    return task.metadata.get(REPLAY_METADATA_KEY) is not None


def agent_for(task: Task, agents: Mapping[str, Agent]) -> Agent | None:
    """The agent that runs ``task`` when it is a replay or a fork, else None (run it as usual)."""
    raw = task.metadata.get(REPLAY_METADATA_KEY)
    if raw is None:
        return None
    agent = agents.get(task.target_agent)
    if agent is None:
        return None  # the executor reports that the agent is not hosted here
    try:
        spec = ReplaySpec.model_validate(raw)
    except ValidationError as exc:
        return _Refused(agent, f"invalid metadata.replay: {validation_reason(exc)}")
    if spec.mode is ReplayMode.DETERMINISTIC:
        return DeterministicReplayAgent(agent, spec)
    return ForkAgent(agent, spec)


class _Wrapper(Agent):
    def __init__(self, agent: Agent, spec: ReplaySpec) -> None:
        self.inner = agent
        self.agent_card = agent.agent_card
        self.spec = spec


class _Refused(Agent):
    def __init__(self, agent: Agent, reason: str) -> None:
        self.agent_card = agent.agent_card
        self.reason = reason

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        return failed(task, self.reason)


class DeterministicReplayAgent(_Wrapper):
    """Runs the agent with everything answered from the recording; reports divergence."""

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        recording = self.spec.recording
        children = RecordedChildren(recording.children)
        replay_ctx = dataclasses.replace(ctx, children=children)
        provider: RecordedProvider | None = None
        tools: RecordedTools | None = None
        runner: Agent = self.inner
        if isinstance(self.inner, ReActAgent):
            provider = recorded_provider(recording, name="recorded")
            tools = recorded_tools(recording, self.inner.tools.definitions())
            runner = self.inner.with_runtime(provider=provider, tools=tools)
        counts = _Counts(provider, tools, children)
        try:
            done = await runner.execute_task(task, replay_ctx)
        except ReplayDivergence as exc:
            report = divergence_report(exc, counts)
            return completed(task, {"answer": None, "status": None, "replay": _wire(report)})
        swallowed = counts.divergence()
        if swallowed is not None:
            report = divergence_report(swallowed, counts)
        else:
            report = compare_outcome(done, recording, counts)
        result = done.result if isinstance(done.result, dict) else {"value": done.result}
        return completed(
            task,
            {
                **result,
                "answer": result.get("answer"),
                "status": done.status.value,
                "error": done.error,
                "replay": _wire(report),
            },
        )


class ForkAgent(_Wrapper):
    """Runs the agent with the steps before ``fromStep`` from the recording, the rest live."""

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        recording = self.spec.recording
        from_step = self.spec.from_step
        if from_step is None:
            return failed(task, "a fork needs metadata.replay.fromStep (an integer >= 1)")
        changes = self.spec.changes

        runner: Agent = self.inner
        run_ctx = ctx
        provider: SplicedProvider | None = None
        children: RecordedChildren | None = None
        if isinstance(self.inner, ReActAgent):
            try:
                live_provider = live_provider_for(self.inner.provider, changes)
                live_tools = live_tools_for(self.inner.tools, changes.tools)
            except ValueError as exc:
                return failed(task, f"fork: {exc}")
            prefix = [recorded_response(step) for step in recording.llm if step.step < from_step]
            responses = [response for response in prefix if isinstance(response, LLMResponse)]
            if len(responses) < len(prefix):
                return failed(task, f"fork: the recording has a failed LLM call before step {from_step}")
            provider = SplicedProvider(responses, live_provider)
            recorded_tools_prefix = RecordedTools(
                [t.result for t in recording.tools if t.step < from_step],
                calls=[t.call for t in recording.tools if t.step < from_step],
            )
            runner = self.inner.with_runtime(
                provider=provider,
                tools=SplicedTools(recorded_tools_prefix, live_tools),
                system_prompt=changes.system_prompt,
                max_steps=changes.max_steps,
            )
        else:
            children = RecordedChildren(
                [child for child in recording.children if child.index < from_step - 1], live=ctx.children
            )
            run_ctx = dataclasses.replace(ctx, children=children)
        try:
            done = await runner.execute_task(task, run_ctx)
        except ReplayDivergence as exc:
            return failed(task, f"fork: the run left the recording before step {from_step}: {exc}")
        replayed = provider.replayed if provider is not None else (children.calls if children else 0)
        fork = ForkInfo(
            original_task_id=self.spec.original_task_id, from_step=from_step, replayed=replayed
        ).model_dump(mode="json", by_alias=True)
        if done.status is TaskStatus.COMPLETED:
            result = done.result if isinstance(done.result, dict) else {"value": done.result}
            return done.model_copy(update={"result": {**result, "fork": fork}})
        return done


def live_provider_for(provider: LLMProvider, changes: ForkChanges) -> LLMProvider:
    """The provider a fork runs its live steps with: the agent's, or another model / provider."""
    name = changes.provider
    model = changes.model
    live = provider
    if name is not None and name != provider.name:
        if name != "scripted":
            raise ValueError(
                f"this worker cannot switch to provider {name!r}: it runs {provider.name!r} "
                "(only 'scripted' can be chosen per task)"
            )
        live = ScriptedProvider(model or "scripted-v1")
        model = None
    if model:
        live = copy.copy(live)
        live.model = model
    return live


def live_tools_for(tools: ToolExecutor, names: list[str] | None) -> ToolExecutor:
    """The agent's tools, or the subset ``names`` of them."""
    if names is None:
        return tools
    get = getattr(tools, "get", None)
    if get is None:
        raise ValueError("this agent's tools cannot be narrowed")
    chosen = [get(name) for name in names]
    missing = [name for name, item in zip(names, chosen, strict=True) if item is None]
    if missing:
        raise ValueError(f"unknown tool(s) {missing}; the agent has {[d.name for d in tools.definitions()]}")
    return ToolRegistry(chosen)


@dataclasses.dataclass
class _Counts:
    provider: RecordedProvider | None
    tools: RecordedTools | None
    children: RecordedChildren

    def divergence(self) -> ReplayDivergence | None:
        for recorded in (self.provider, self.tools, self.children):
            if recorded is not None and recorded.divergence is not None:
                return recorded.divergence
        return None

    def counts(self) -> ReplayCounts:
        return ReplayCounts(
            llm_calls=self.provider.calls if self.provider else 0,
            tool_calls=self.tools.calls if self.tools else 0,
            children=self.children.calls,
        )


def _wire(report: ReplayReport) -> dict[str, Any]:
    # every key, None included: readers index the report by key
    return report.model_dump(mode="json", by_alias=True)


def divergence_report(exc: ReplayDivergence, counts: _Counts) -> ReplayReport:
    """The report of a run that left the recording (``exc`` says where)."""
    index = exc.step
    if exc.kind == "llm":
        step: int | None = index + 1
        if exc.expected == "no further LLM call":
            reason = f"LLM step {step}: the replayed agent made an LLM call the recording does not have"
        else:
            got = exc.got if isinstance(exc.got, dict) else {}
            reason = (
                f"LLM step {step}: the conversation sent to the LLM differs from the recorded one "
                f"at message {got.get('messageIndex')} ({got.get('role') or 'missing'})"
            )
    elif exc.kind == "tool":
        step = counts.provider.calls if counts.provider is not None else None
        reason = f"tool call {index} (LLM step {step}): expected {exc.expected!r}, got {exc.got!r}"
    elif exc.kind == "child":
        step = index + 1
        reason = f"delegation {index}: expected {exc.expected!r}, got {exc.got!r}"
    else:
        step = index
        reason = str(exc)
    return ReplayReport(
        diverged=True,
        step=step,
        at=exc.kind,
        index=index,
        expected=exc.expected,
        got=exc.got,
        reason=reason,
        replayed=counts.counts(),
    )


def compare_outcome(done: Task, recording: Recording, counts: _Counts) -> ReplayReport:
    """Compare a replayed run that stayed on the recording with the original's outcome."""

    def diverged(at: str, step: int | None, expected: Any, got: Any, reason: str) -> ReplayReport:
        return ReplayReport(
            diverged=True,
            step=step,
            at=at,
            expected=expected,
            got=got,
            reason=reason,
            replayed=counts.counts(),
        )

    result = done.result if isinstance(done.result, dict) else {}
    steps = result.get("steps") if isinstance(result.get("steps"), int) else None
    provider, tools, children = counts.provider, counts.tools, counts.children
    if provider is not None and provider.calls < provider.recorded:
        return diverged(
            "llm",
            provider.calls + 1,
            f"{provider.recorded} LLM calls",
            f"{provider.calls} LLM calls",
            f"the replayed run ended after {provider.calls} LLM calls; the recording has {provider.recorded}",
        )
    if tools is not None and tools.calls < tools.recorded:
        return diverged(
            "tool",
            steps,
            f"{tools.recorded} tool calls",
            f"{tools.calls} tool calls",
            f"the replayed run made {tools.calls} tool calls; the recording has {tools.recorded}",
        )
    unused = children.unused
    if unused:
        return diverged(
            "child",
            children.calls + 1,
            [{"agent": c.agent, "parameters": c.parameters} for c in unused[:3]],
            None,
            f"the replayed run skipped {len(unused)} recorded delegation(s)",
        )
    outcome = recording.outcome
    if outcome.status is not None and outcome.status != done.status.value:
        return diverged(
            "outcome",
            steps,
            {"status": outcome.status, "error": outcome.error},
            {"status": done.status.value, "error": done.error},
            f"the original run ended {outcome.status}, the replay {done.status.value}",
        )
    answer = result.get("answer")
    if outcome.answer is not None and answer != outcome.answer:
        return diverged(
            "answer",
            steps,
            outcome.answer,
            answer,
            f"the replayed answer {answer!r} differs from the recorded {outcome.answer!r}",
        )
    return ReplayReport(diverged=False, replayed=counts.counts())
