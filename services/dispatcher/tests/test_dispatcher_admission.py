"""Admission decisions without a server: the same submission, the closest names, and the
known-agents cache (a hit asks nothing; concurrent misses share one request made after them)."""

from __future__ import annotations

import asyncio

from loom_dispatcher.admission import (
    AgentDirectory,
    differing_fields,
    unknown_agent_reason,
    wants_to_wait,
)
from loom_dispatcher.errors import RegistryUnavailable
from loom_protocol import Task


def test_the_same_submission_ignores_what_loom_writes_and_names_what_differs() -> None:
    task = Task(task_id="t1", target_agent="echo", parameters={"v": 1}, metadata={"a": 1})
    later = task.model_copy(update={"metadata": {"a": 1, "cancelRequested": True, "waitForAgent": True}})
    assert differing_fields(later, task) == []
    assert (
        differing_fields(
            task, Task(task_id="t1", target_agent="echo", parameters={"v": 1}, metadata={"a": 1})
        )
        == []
    )
    other = Task(task_id="t1", target_agent="echo", parameters={"v": 2}, session_id="s")
    assert differing_fields(task, other) == ["parameters", "metadata", "sessionId"]


def test_waiting_is_asked_for_with_a_true_flag_only() -> None:
    assert wants_to_wait(Task(target_agent="x", metadata={"waitForAgent": True}))
    assert not wants_to_wait(Task(target_agent="x", metadata={"waitForAgent": "yes"}))
    assert not wants_to_wait(Task(target_agent="x"))


def test_the_reason_names_the_closest_known_agents() -> None:
    reason, close = unknown_agent_reason("calculater", ["calculator", "echo", "orchestrator"])
    assert close == ["calculator"]
    assert "unknown agent 'calculater'" in reason and "did you mean 'calculator'?" in reason
    assert "waitForAgent" in reason
    reason, close = unknown_agent_reason("zzz", ["echo"])
    assert close == [] and "did you mean" not in reason


async def test_a_hit_asks_nothing_and_misses_during_a_request_share_the_next_one() -> None:
    calls: list[int] = []
    gate = asyncio.Event()

    async def fetch() -> list[str]:
        calls.append(1)
        await gate.wait()
        return ["echo"]

    agents = AgentDirectory(fetch)
    misses = [asyncio.ensure_future(agents.is_known(name)) for name in ("echo", "nope", "echo", "nope")]
    await asyncio.sleep(0)  # all arrive before the answer: the first request, then one shared by three
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*misses), 5) == [True, False, True, False]
    assert len(calls) == 2
    assert await agents.is_known("echo") is True and len(calls) == 2  # cached: no request
    assert agents.known == ["echo"]


async def test_a_miss_is_answered_by_a_request_made_after_it() -> None:
    answers = [["echo"], ["echo", "new"]]
    first_started, release_first = asyncio.Event(), asyncio.Event()

    async def fetch() -> list[str]:
        answer = answers.pop(0)
        if len(answers) == 1:  # the first request: still in flight when "new" is asked for
            first_started.set()
            await release_first.wait()
        return answer

    agents = AgentDirectory(fetch)
    early = asyncio.ensure_future(agents.is_known("echo"))
    await asyncio.wait_for(first_started.wait(), 5)
    late = asyncio.ensure_future(agents.is_known("new"))  # arrives while the first is in flight
    await asyncio.sleep(0)
    release_first.set()
    assert await asyncio.wait_for(early, 5) is True
    assert await asyncio.wait_for(late, 5) is True  # from the second request, not the first


async def test_no_answer_from_the_registry_is_none_not_unknown_and_not_asked_again_at_once() -> None:
    calls: list[int] = []

    async def down() -> list[str]:
        calls.append(1)
        raise RegistryUnavailable("no registry")

    agents = AgentDirectory(down, retry_after_s=60)
    assert await agents.is_known("echo") is None
    assert await agents.is_known("echo") is None
    assert len(calls) == 1
