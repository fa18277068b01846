"""The worker side of deterministic replay and forks (``loom_agent_worker.replay_agents``).

Recordings are rebuilt here from the events a run emitted, the way the replay service does
from the events table, so these tests also pin that the events carry what a replay needs.
"""

from __future__ import annotations

from typing import Any

import pytest
from loom_agent_worker import replay_agents as worker_replay
from loom_agent_worker.runtime import (
    LLMResponse,
    ProviderError,
    ReActAgent,
    RecordingTools,
    ScriptedProvider,
    build_demo_agents,
    builtin_registry,
    run_with_interceptors,
)
from loom_protocol import AgentCard, McpToolDefinition, Task, TaskStatus


class ExplodingProvider:
    """Fails the test if a replay ever calls the LLM."""

    name = "exploding"
    model = "none"

    async def complete(self, messages: Any, tools: list[McpToolDefinition]) -> LLMResponse:
        raise AssertionError("a deterministic replay called the LLM provider")


def recording_of(events: list[Any], task: Task, done: Task) -> dict[str, Any]:
    """The recording of one task, from its events (mirrors loom_replay.recording)."""
    mine = [e for e in events if e.task_id == task.task_id]
    llm: dict[int, dict[str, Any]] = {}
    digests: dict[int, list[str]] = {}
    tools: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    step = 0
    for event in mine:
        data = event.data
        if event.type == "llm.request":
            step = data["step"]
            digests[step] = data["message_digests"]
        elif event.type == "llm.usage":
            llm[data["step"]] = {
                "step": data["step"],
                "content": "",
                "toolCalls": [],
                "inputTokens": data["input_tokens"],
                "outputTokens": data["output_tokens"],
                "latencyS": data["latency_s"],
                "model": data["model"],
                "requestDigests": digests.get(data["step"]),
            }
        elif event.type == "agent.thought" and "step" in data:
            llm[data["step"]]["content"] = data["content"]
        elif event.type == "agent.action" and "step" in data:
            llm[data["step"]]["toolCalls"].append(
                {"callId": data["call_id"], "name": data["tool"], "arguments": data["arguments"]}
            )
        elif event.type == "agent.answer" and "steps" in data:
            llm[data["steps"]]["content"] = data["answer"]
        elif event.type == "tool.call":
            calls[data["call_id"]] = {
                "callId": data["call_id"],
                "name": data["name"],
                "arguments": data["arguments"],
            }
        elif event.type == "tool.result":
            result = {k: data[k] for k in ("name", "content")} | {
                "callId": data["call_id"],
                "isError": data["is_error"],
            }
            tools.append({"step": step, "call": calls[data["call_id"]], "result": result})
    result = done.result if isinstance(done.result, dict) else {}
    return {
        "agent": task.target_agent,
        "llm": [llm[k] for k in sorted(llm)],
        "tools": tools,
        "children": [],
        "outcome": {"status": done.status.value, "answer": result.get("answer"), "error": done.error},
    }


def replay_task(original: Task, mode: str, recording: dict[str, Any], **spec: Any) -> Task:
    return Task(
        target_agent=original.target_agent,
        parameters={**original.parameters, **spec.pop("parameters", {})},
        status=TaskStatus.RUNNING,
        metadata={
            "replay": {"mode": mode, "recording": recording, "originalTaskId": original.task_id, **spec}
        },
    )


async def record_calculator(
    make_context: Any, prompt: str = "what is (2+3)*4?", parameters: dict[str, Any] | None = None
):
    agents = build_demo_agents()
    task = Task(
        target_agent="calculator",
        parameters={"prompt": prompt, **(parameters or {})},
        status=TaskStatus.RUNNING,
    )
    ctx = make_context(task, agents=agents)
    done = await run_with_interceptors(agents["calculator"], task, ctx, [])
    assert done.status is TaskStatus.COMPLETED
    return task, done, recording_of(ctx.events.events, task, done)


def replay_agents() -> dict[str, Any]:
    """Demo agents whose calculator would fail the test if its LLM were called."""
    agents = build_demo_agents(ExplodingProvider())  # type: ignore[arg-type]
    return agents


async def run_replay(make_context: Any, task: Task, agents: dict[str, Any]) -> Task:
    agent = worker_replay.agent_for(task, agents)
    assert agent is not None
    return await run_with_interceptors(agent, task, make_context(task, agents=agents), [])


def test_tasks_without_replay_metadata_run_as_usual() -> None:
    agents = build_demo_agents()
    assert worker_replay.agent_for(Task(target_agent="calculator"), agents) is None
    unknown_agent = Task(target_agent="nobody", metadata={"replay": {"mode": "deterministic"}})
    assert worker_replay.agent_for(unknown_agent, agents) is None


async def test_deterministic_replay_of_a_recorded_run_does_not_diverge_and_calls_no_provider(
    new_context: Any,
) -> None:
    original, done, recording = await record_calculator(new_context)
    assert [step["toolCalls"][0]["name"] for step in recording["llm"][:1]] == ["calculator"]

    replayed = await run_replay(
        new_context, replay_task(original, "deterministic", recording), replay_agents()
    )

    assert replayed.status is TaskStatus.COMPLETED, replayed.error
    report = replayed.result["replay"]
    assert report["diverged"] is False, report
    assert report["replayed"] == {"llmCalls": 2, "toolCalls": 1, "children": 0}
    assert replayed.result["answer"] == done.result["answer"] == "20"


async def test_a_tampered_tool_result_diverges_at_the_llm_step_that_consumed_it(new_context: Any) -> None:
    original, _, recording = await record_calculator(new_context)
    recording["tools"][0]["result"]["content"] = "21"

    replayed = await run_replay(
        new_context, replay_task(original, "deterministic", recording), replay_agents()
    )

    report = replayed.result["replay"]
    assert report["diverged"] is True
    assert (report["step"], report["at"]) == (2, "llm")
    # the conversation is [user, assistant (calculator call), tool]: the tool message differs
    assert report["got"]["messageIndex"] == 2
    assert (report["got"]["role"], report["got"]["content"]) == ("tool", "21")
    assert report["expected"]["digest"] != report["got"]["digest"]
    assert "LLM step 2" in report["reason"]


async def test_tampered_tool_arguments_diverge_at_the_tool_call(new_context: Any) -> None:
    original, _, recording = await record_calculator(new_context)
    recording["tools"][0]["call"]["arguments"] = {"expression": "2+2"}

    replayed = await run_replay(
        new_context, replay_task(original, "deterministic", recording), replay_agents()
    )

    report = replayed.result["replay"]
    assert (report["diverged"], report["at"], report["step"], report["index"]) == (True, "tool", 1, 0)
    assert report["expected"]["arguments"] == {"expression": "2+2"}
    assert report["got"]["arguments"] == {"expression": "(2+3)*4"}


async def test_a_different_recorded_answer_or_a_missing_step_is_reported(new_context: Any) -> None:
    original, _, recording = await record_calculator(new_context)
    tampered = {**recording, "outcome": {**recording["outcome"], "answer": "21"}}
    report = (
        await run_replay(new_context, replay_task(original, "deterministic", tampered), replay_agents())
    ).result["replay"]
    assert (report["diverged"], report["at"], report["expected"], report["got"]) == (
        True,
        "answer",
        "21",
        "20",
    )

    cut = {**recording, "llm": recording["llm"][:1]}
    report = (
        await run_replay(new_context, replay_task(original, "deterministic", cut), replay_agents())
    ).result["replay"]
    assert (report["diverged"], report["at"], report["step"]) == (True, "llm", 2)
    assert "does not have" in report["reason"]

    longer = {**recording, "llm": [*recording["llm"], {**recording["llm"][-1], "step": 3}]}
    report = (
        await run_replay(new_context, replay_task(original, "deterministic", longer), replay_agents())
    ).result["replay"]
    assert (report["diverged"], report["at"], report["step"]) == (True, "llm", 3)


async def test_a_recorded_provider_error_fails_the_replay_the_same_way(new_context: Any) -> None:
    original, _, recording = await record_calculator(new_context)
    recording["llm"][1] = {"step": 2, "error": "HTTP 500 from the provider"}
    recording["outcome"] = {
        "status": "failed",
        "error": "LLM provider error at step 2: HTTP 500 from the provider",
    }

    replayed = await run_replay(
        new_context, replay_task(original, "deterministic", recording), replay_agents()
    )

    assert replayed.result["status"] == "failed"
    assert replayed.result["error"] == "LLM provider error at step 2: HTTP 500 from the provider"
    assert replayed.result["replay"]["diverged"] is False


async def test_orchestrator_replay_answers_delegations_from_the_recording(new_context: Any) -> None:
    task = Task(
        target_agent="orchestrator", parameters={"prompt": "2+3 and hello"}, status=TaskStatus.RUNNING
    )
    recording = {
        "agent": "orchestrator",
        "children": [
            {
                "index": 0,
                "agent": "calculator",
                "parameters": {"prompt": "2+3"},
                "status": "completed",
                "result": {"answer": "5"},
                "taskId": "child-1",
            },
            {
                "index": 1,
                "agent": "echo",
                "parameters": {"prompt": "hello"},
                "status": "completed",
                "result": {"prompt": "hello"},
                "taskId": "child-2",
            },
        ],
        "outcome": {"status": "completed", "answer": "5; hello"},
    }
    agents = {"orchestrator": build_demo_agents()["orchestrator"]}  # no calculator/echo: nothing runs live

    replayed = await run_replay(new_context, replay_task(task, "deterministic", recording), agents)

    assert replayed.result["replay"]["diverged"] is False, replayed.result
    assert replayed.result["answer"] == "5; hello"
    assert [c["task_id"] for c in replayed.result["children"]] == ["child-1", "child-2"]

    recording["children"][0]["result"] = {"answer": "6"}
    report = (await run_replay(new_context, replay_task(task, "deterministic", recording), agents)).result[
        "replay"
    ]
    assert (report["diverged"], report["at"], report["got"]) == (True, "answer", "6; hello")

    other_plan = replay_task(task, "deterministic", recording, parameters={"prompt": "2+4 and hello"})
    report = (await run_replay(new_context, other_plan, agents)).result["replay"]
    assert (report["diverged"], report["at"]) == (True, "child")
    assert report["got"] == {"agent": "calculator", "parameters": {"prompt": "2+4"}}


async def test_fork_replays_steps_before_n_and_runs_the_rest_live(new_context: Any) -> None:
    script = [
        {"thought": "add", "tool": "calculator", "arguments": {"expression": "2+3"}},
        {"answer": "five"},
    ]
    original, done, recording = await record_calculator(new_context, "add", {"script": script})
    assert done.result["answer"] == "five"

    live_tools = RecordingTools(builtin_registry())
    card = AgentCard(agent_id="calculator", name="Calculator")
    agents = {"calculator": ReActAgent(card, ScriptedProvider(), live_tools)}
    new_plan = [
        {"answer": "unused"},
        {"thought": "double", "tool": "calculator", "arguments": {"expression": "5*2"}},
        {"answer": "ten"},
    ]
    fork = replay_task(original, "fork", recording, fromStep=2, changes={}, parameters={"script": new_plan})

    forked = await run_replay(new_context, fork, agents)

    assert forked.status is TaskStatus.COMPLETED, forked.error
    assert forked.result["answer"] == "ten"
    assert forked.result["steps"] == 3
    assert forked.result["fork"] == {"originalTaskId": original.task_id, "fromStep": 2, "replayed": 1}
    # step 1's tool call came from the recording; only step 2's ran live
    assert [call.arguments for call in live_tools.calls] == [{"expression": "5*2"}]


async def test_fork_can_switch_model_and_narrow_tools_and_refuses_bad_changes(new_context: Any) -> None:
    original, _, recording = await record_calculator(new_context)
    agents = build_demo_agents()

    fork = replay_task(
        original, "fork", recording, fromStep=1, changes={"model": "scripted-v2", "tools": ["calculator"]}
    )
    forked = await run_replay(new_context, fork, agents)
    assert forked.status is TaskStatus.COMPLETED, forked.error
    assert forked.result["answer"] == "20"

    for changes, reason in [
        ({"provider": "openai"}, "cannot switch to provider 'openai'"),
        ({"tools": ["nope"]}, "unknown tool(s) ['nope']"),
        ({"maxSteps": 0}, "invalid metadata.replay: field 'changes.maxSteps'"),
    ]:
        failed = await run_replay(
            new_context, replay_task(original, "fork", recording, fromStep=1, changes=changes), agents
        )
        assert failed.status is TaskStatus.FAILED
        assert reason in failed.error

    bad_step = await run_replay(new_context, replay_task(original, "fork", recording, fromStep=0), agents)
    assert "invalid metadata.replay: field 'fromStep'" in bad_step.error
    no_step = await run_replay(new_context, replay_task(original, "fork", recording), agents)
    assert "a fork needs metadata.replay.fromStep" in no_step.error
    bad_mode = replay_task(original, "rewind", recording)
    assert "invalid metadata.replay: field 'mode'" in (await run_replay(new_context, bad_mode, agents)).error
    bad_recording = replay_task(original, "deterministic", {"llm": [{"step": 0}]})
    error = (await run_replay(new_context, bad_recording, agents)).error
    assert "invalid metadata.replay: field 'recording.llm[0].step'" in error


def test_provider_errors_are_kept_as_errors_in_the_recording() -> None:
    from loom_agent_worker.runtime import recorded_response
    from loom_protocol import Recording

    recording = Recording.model_validate({"llm": [{"step": 1, "error": "boom"}]})
    assert isinstance(recorded_response(recording.llm[0]), ProviderError)
    with pytest.raises(ValueError):
        Recording.model_validate({"llm": [{"step": 0}]})
