"""The ReAct loop: think with the LLM, act with tools, observe, until an answer."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from loom_protocol import (
    AgentAction,
    AgentAnswer,
    AgentCard,
    AgentThought,
    ApprovalRequest,
    ErrorReported,
    LlmRequest,
    LlmUsage,
    McpToolCall,
    McpToolDefinition,
    McpToolResult,
    MemoryTier,
    RecordedLlmStep,
    RecordedToolStep,
    Task,
    ToolCalled,
    ToolReturned,
    approval_key,
)

from loom_agent_worker.runtime.agent import Agent, completed, failed
from loom_agent_worker.runtime.context import AnswerStream, NullEventSink, TaskContext
from loom_agent_worker.runtime.durable import ToolCallInfo, enter_tool_call, leave_tool_call
from loom_agent_worker.runtime.providers.base import (
    ChatMessage,
    LLMProvider,
    LLMResponse,
    ProviderError,
    StreamingProvider,
    TaskAwareProvider,
    conversation_digests,
    message_digest,
)
from loom_agent_worker.runtime.recorded import recorded_response
from loom_agent_worker.runtime.tools import ToolExecutor, render_content

logger = logging.getLogger(__name__)

DEFAULT_MAX_STEPS = 8
OBSERVATION_IMPORTANCE = 0.3
ERROR_OBSERVATION_IMPORTANCE = 0.6
CONTEXT_NOTES = 5


@dataclass
class UsageTotals:
    """Token, cost and latency totals over the LLM calls of one task."""

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    retries: int = 0

    def add(self, response: LLMResponse) -> None:
        self.llm_calls += 1
        self.retries += response.retries
        self.input_tokens += response.usage.input_tokens
        self.output_tokens += response.usage.output_tokens
        self.latency_s += response.latency_s
        if response.usage.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + response.usage.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ReActAgent(Agent):
    """An agent that loops LLM call -> tool calls -> observations until the LLM answers.

    Parameters: ``prompt`` (the question; optional when the scripted provider follows a
    ``script``). Result: ``{"answer": str, "steps": int, "usage": {...}}``. Running out of
    ``max_steps`` or an LLM provider error fails the task.

    A task with ``action: "stream"`` (``ctx.stream`` set) streams its answer as the model
    produces it: every LLM call goes through the provider's ``stream`` when it has one; text of
    a call that ends in tool calls is discarded again, and tool steps themselves are not
    streamed (their calls and results are in the events, as for any task).

    Every LLM call is in the events: ``llm.request`` (the messages sent, system prompt
    included, the tool names, the digests), ``llm.usage`` (the completion text and tool
    calls, tokens, cost, latency, retries), ``agent.thought`` / ``agent.answer`` (the text).
    Without content capture (``capture_content=False``, or None and the worker's
    ``LOOM_CAPTURE_CONTENT=false``) no prompt or completion text is in any event: digests,
    tool names and tool calls, tokens and cost stay.
    """

    def __init__(
        self,
        card: AgentCard,
        provider: LLMProvider,
        tools: ToolExecutor,
        *,
        system_prompt: str | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        capture_content: bool | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.agent_card = card
        self.provider = provider
        self.tools = tools
        self.system_prompt = system_prompt or (
            f"You are {card.name}. {card.description} Use the tools when they help and answer concisely."
        )
        self.max_steps = max_steps
        self.capture_content = capture_content

    async def execute_task(self, task: Task, ctx: TaskContext) -> Task:
        prompt = task.parameters.get("prompt", "" if "script" in task.parameters else None)
        if not isinstance(prompt, str):
            return self._fail(task, ctx, "parameters.prompt must be a string")
        try:
            provider = self._provider_for(task)
        except ProviderError as exc:
            return self._fail(task, ctx, f"LLM provider error: {exc}")
        llm = f"llm:{provider.name}/{provider.model}"
        definitions = self.tools.definitions()
        user = ChatMessage(role="user", content=prompt)
        messages = [ChatMessage(role="system", content=self._system_message(ctx)), user]
        ctx.memory.add_message(user)
        usage = UsageTotals()
        capture = self.capture_content if self.capture_content is not None else ctx.capture_content
        system_digest = message_digest(ChatMessage(role="system", content=self.system_prompt))

        for step in range(1, self.max_steps + 1):
            recorded = ctx.journal.llm(step)  # an earlier attempt's response: not asked again
            if recorded is not None:
                response = recorded_response(recorded, errors=False)
            else:
                ctx.events.emit(
                    LlmRequest(
                        step=step,
                        message_count=len(messages),
                        provider=provider.name,
                        model=provider.model,
                        tools=[definition.name for definition in definitions],
                        message_digests=conversation_digests(messages),
                        system_digest=system_digest,
                        messages=captured_messages(messages) if capture else None,
                    ),
                    subject=llm,
                )
                try:
                    response = await self._ask(provider, messages, definitions, ctx.stream, step)
                except ProviderError as exc:
                    return self._fail(task, ctx, f"LLM provider error at step {step}: {exc}")
                await ctx.journal.record_llm(journal_step(step, response, provider.model, messages))
                ctx.events.emit(
                    LlmUsage(
                        step=step,
                        input_tokens=response.usage.input_tokens,
                        output_tokens=response.usage.output_tokens,
                        cost_usd=response.usage.cost_usd,
                        latency_s=response.latency_s,
                        model=response.model or provider.model,
                        provider=provider.name,
                        retries=response.retries,
                        completion=clip(response.content)
                        if capture and response.content is not None
                        else None,
                        tool_calls=response.tool_calls,
                        content_captured=capture,
                    ),
                    subject=llm,
                )
            live = recorded is None
            events = ctx.events if live else NullEventSink()  # restored steps are not emitted again
            usage.add(response)
            assistant = ChatMessage(
                role="assistant", content=response.content or "", tool_calls=response.tool_calls
            )
            messages.append(assistant)
            ctx.memory.add_message(assistant)

            if not response.tool_calls:
                answer = response.content or ""
                events.emit(AgentAnswer(answer=answer if capture else None, steps=step))
                ctx.memory.consolidate(events=events)
                if ctx.stream is not None:
                    if not live:
                        await ctx.stream.delta(answer, step=step)
                    await ctx.stream.done()
                return completed(task, {"answer": answer, "steps": step, "usage": usage.as_dict()})

            if response.content and capture:
                events.emit(AgentThought(step=step, content=response.content))
            for index, call in enumerate(response.tool_calls):
                result, ran_live = await self._tool_step(ctx, step, index, call, response, capture)
                content = render_content(result.content)
                observation = ChatMessage(
                    role="tool", content=content, tool_call_id=call.call_id, name=call.name
                )
                messages.append(observation)
                ctx.memory.add_message(observation)
                outcome = f"error: {content}" if result.is_error else content
                ctx.memory.add_note(
                    f"{call.name}({_brief(call.arguments)}) -> {outcome}",
                    node_id=task.target_agent,
                    tier=MemoryTier.WORKING,
                    importance=ERROR_OBSERVATION_IMPORTANCE if result.is_error else OBSERVATION_IMPORTANCE,
                    role="observation",
                    events=ctx.events if ran_live else NullEventSink(),
                )

        return self._fail(task, ctx, f"no answer after max_steps={self.max_steps} LLM calls")

    async def _tool_step(
        self,
        ctx: TaskContext,
        step: int,
        index: int,
        call: McpToolCall,
        response: LLMResponse,
        capture: bool,
    ) -> tuple[McpToolResult, bool]:
        """The result of the ``index``-th tool call of ``step``, and whether it happened now (False:
        restored from the journal): the call run (after a person approved it, when it needs
        approval), or a rejection."""
        recorded = ctx.journal.tool(step, index)
        if recorded is not None:
            return recorded.result.model_copy(update={"call_id": call.call_id}), False
        key = approval_key(step, index)
        subject = f"tool:{call.name}"
        if call.name in ctx.approval_tools or self.tools_require_approval(call.name):
            decision = ctx.decision(key)
            if decision is None:
                raise ctx.await_approval(
                    ApprovalRequest(
                        key=key,
                        tool=call.name,
                        arguments=call.arguments,
                        reasoning=response.content if capture else None,
                        call_id=call.call_id,
                        step=step,
                    )
                )
            if not decision.approved:
                who = f" by {decision.by}" if decision.by else ""
                why = f": {decision.reason}" if decision.reason else ""
                rejected = McpToolResult(
                    call_id=call.call_id,
                    name=call.name,
                    content=f"The call was rejected{who}{why}. It was not run.",
                    is_error=True,
                )
                ctx.events.emit(ToolReturned.from_result(rejected), subject=subject)
                await ctx.journal.record_tool(index, RecordedToolStep(step=step, call=call, result=rejected))
                return rejected, True
            if decision.arguments is not None:
                call = call.model_copy(update={"arguments": decision.arguments})
        ctx.events.emit(
            AgentAction(step=step, tool=call.name, arguments=call.arguments, call_id=call.call_id),
            subject=subject,
        )
        ctx.events.emit(ToolCalled.from_call(call), subject=subject)
        token = enter_tool_call(ToolCallInfo(ctx.task.task_id, step, index))
        try:
            result = await self.tools.call(call)
        finally:
            leave_tool_call(token)
        ctx.events.emit(ToolReturned.from_result(result), subject=subject)
        await ctx.journal.record_tool(index, RecordedToolStep(step=step, call=call, result=result))
        return result, True

    def tools_require_approval(self, name: str) -> bool:
        """Whether this agent's tool ``name`` is marked ``requires_approval``."""
        check = getattr(self.tools, "requires_approval", None)
        return bool(check(name)) if callable(check) else False

    def with_runtime(
        self,
        *,
        provider: LLMProvider | None = None,
        tools: ToolExecutor | None = None,
        system_prompt: str | None = None,
        max_steps: int | None = None,
    ) -> ReActAgent:
        """A copy of this agent (same card and prompt) with another provider, tools or limits;
        replay uses it to run the same agent code against a recording."""
        return ReActAgent(
            self.agent_card,
            provider if provider is not None else self.provider,
            tools if tools is not None else self.tools,
            system_prompt=system_prompt if system_prompt is not None else self.system_prompt,
            max_steps=max_steps if max_steps is not None else self.max_steps,
            capture_content=self.capture_content,
        )

    async def _ask(
        self,
        provider: LLMProvider,
        messages: list[ChatMessage],
        definitions: list[McpToolDefinition],
        stream: AnswerStream | None,
        step: int,
    ) -> LLMResponse:
        """One LLM call; for a streaming task its text goes to ``stream`` as it is produced.

        A provider without ``stream`` answers whole, and an answer (no tool calls) is then
        streamed as one chunk. Text streamed by a step that ends in tool calls was a thought,
        not the answer: the stream is told to discard it.
        """
        if stream is None:
            return await provider.complete(messages, definitions)
        if not isinstance(provider, StreamingProvider):
            response = await provider.complete(messages, definitions)
            if response.content and not response.tool_calls:
                await stream.delta(response.content, step=step)
            return response
        streamed = False

        async def on_delta(text: str) -> None:
            nonlocal streamed
            streamed = True
            await stream.delta(text, step=step)

        response = await provider.stream(messages, definitions, on_delta)
        if streamed and response.tool_calls:
            await stream.discard(step)
        return response

    def _provider_for(self, task: Task) -> LLMProvider:
        if isinstance(self.provider, TaskAwareProvider):
            return self.provider.for_task(task)
        return self.provider

    def _system_message(self, ctx: TaskContext) -> str:
        notes = ctx.memory.notes(MemoryTier.LONG_TERM)[-CONTEXT_NOTES:]
        if not notes:
            return self.system_prompt
        facts = "\n".join(f"- {note.content}" for note in notes)
        return f"{self.system_prompt}\nWhat you know from this session:\n{facts}"

    def _fail(self, task: Task, ctx: TaskContext, error: str) -> Task:
        logger.info("task %s on agent %s failed: %s", task.task_id, self.node_id, error)
        ctx.events.emit(ErrorReported(error=error))
        return failed(task, error)


MAX_CAPTURED_CHARS = 32_000  # of one message or completion
MAX_CAPTURED_TOTAL = 256_000  # of one request's messages: an event stays far below NATS' 1 MB


def journal_step(
    step: int, response: LLMResponse, model: str, messages: list[ChatMessage]
) -> RecordedLlmStep:
    """An LLM step as the journal records it, with the digests of the conversation it was sent."""
    return RecordedLlmStep(
        step=step,
        content=response.content,
        tool_calls=response.tool_calls,
        input_tokens=response.usage.input_tokens,
        output_tokens=response.usage.output_tokens,
        cost_usd=response.usage.cost_usd,
        latency_s=response.latency_s,
        model=response.model or model,
        request_digests=conversation_digests(messages),
    )


def clip(text: str, limit: int = MAX_CAPTURED_CHARS) -> str:
    """``text`` cut at ``limit`` characters, saying how many were left out."""
    return text if len(text) <= limit else f"{text[:limit]}...[{len(text) - limit} more characters]"


def captured_messages(messages: list[ChatMessage], budget: int = MAX_CAPTURED_TOTAL) -> list[dict[str, Any]]:
    """The messages as ``llm.request`` carries them: each content cut at MAX_CAPTURED_CHARS, and
    the newest kept whole first when the conversation is over ``budget`` characters (the
    digests cover every message in full)."""
    captured: list[dict[str, Any]] = []
    for message in reversed(messages):
        data = message.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data["role"] = message.role
        data["content"] = clip(message.content, max(0, min(MAX_CAPTURED_CHARS, budget)))
        budget -= len(data["content"])
        captured.append(data)
    return captured[::-1]


def _brief(arguments: dict[str, Any], limit: int = 200) -> str:
    text = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    return text if len(text) <= limit else text[:limit] + "..."
