"""The Python SDK (``loom_client``) against the running services in process: the blocking and the
asyncio client over REST and NATS, waiting, cancelling, approvals, the answer stream, typed errors,
and, with ingest, query and replay on a fresh database, the task search, sessions, traces, the live
feed and replay sessions.

The blocking client runs in a worker thread (``asyncio.to_thread``): the services share the test's
event loop, which must keep running while a blocking call waits for them."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from loom_client import (
    AsyncLoomClient,
    CloudEvent,
    Conflict,
    InvalidRequest,
    LoomClient,
    LoomError,
    NotFound,
    StreamEnd,
    Task,
    TaskStatus,
    TaskStreamChunk,
    Timeout,
    Unavailable,
    join_answer,
)
from loom_protocol import TERMINAL_TASK_EVENT_TYPES

from tests.integration.events_support import (
    FAST_INGEST,
    database_url_fixture,  # noqa: F401 (fixture)
)
from tests.integration.harness import AnyService, Stack, free_port, wait_for
from tests.integration.task_support import sleepy

pytestmark = pytest.mark.component

SIX_TIMES_SEVEN = {"prompt": "what is 6*7?"}
STREAMED = "Six times seven is 42, the calculator says, and that is the whole answer."
STREAM_SCRIPT = [
    {"thought": "I should use the calculator.", "tool": "calculator", "arguments": {"expression": "6*7"}},
    {"answer": STREAMED},
]


async def task_path(stack: Stack) -> None:
    """A registry, a dispatcher and one worker hosting echo, calculator and orchestrator."""
    await stack.registry()
    await stack.dispatcher()
    await stack.worker("w1")
    await stack.wait_instances("calculator", 1)


async def everything(stack: Stack, database_url: str) -> tuple[AnyService, AnyService]:
    """The task path plus ingest, query and replay on ``database_url``; returns (query, replay)."""
    services = [
        stack.registry_service(),
        dispatcher := stack.dispatcher_service(),
        stack.worker_service("w1"),
        stack.add("ingest-0", "loom_ingest", {"LOOM_DATABASE_URL": database_url, **FAST_INGEST}),
    ]
    query = stack.service("query-0", "loom_query", LOOM_DATABASE_URL=database_url)
    replay = stack.service(
        "replay-0", "loom_replay", LOOM_DATABASE_URL=database_url, LOOM_DISPATCHER_URL=dispatcher.url
    )
    await asyncio.gather(*(svc.started(120) for svc in (*services, query, replay)))
    await stack.wait_instances("orchestrator", 1)
    return query, replay


def sync_client(stack: Stack, **kwargs: Any) -> LoomClient:
    return LoomClient(stack.api, registry_url=stack.registries[0].url, nats_url=stack.nats_url, **kwargs)


def async_client(stack: Stack, **kwargs: Any) -> AsyncLoomClient:
    return AsyncLoomClient(stack.api, registry_url=stack.registries[0].url, nats_url=stack.nats_url, **kwargs)


async def reaches(loom: AsyncLoomClient, task_id: str, status: TaskStatus) -> Task:
    async def reached() -> Task | None:
        task = await loom.get(task_id)
        return task if task.status == status else None

    found: Task = await wait_for(reached, 30, f"task {task_id} to be {status.value}")
    return found


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_the_blocking_client_submits_waits_cancels_and_lists_agents(stack: Stack) -> None:
    await task_path(stack)

    def scenario() -> dict[str, Any]:
        with sync_client(stack) as loom:
            done = loom.submit("calculator", SIX_TIMES_SEVEN, wait=10, session_id="s-sync")
            again = loom.submit("calculator", SIX_TIMES_SEVEN, task_id=done.task_id, session_id="s-sync")
            echoed = loom.submit("echo", {"n": 1})
            echoed_done = loom.wait(echoed.task_id, timeout=10)
            over_nats = loom.submit("echo", {"n": 2}, via="nats", wait=10)
            published = loom.submit("echo", {"n": 3}, via="nats")
            sleeper = loom.submit("calculator", sleepy(30))
            cancelled = loom.cancel(sleeper.task_id)
            after_cancel = loom.wait(sleeper.task_id, timeout=10)
            return {
                "done": done,
                "got": loom.get(done.task_id),
                "again": again,
                "echoed": (echoed, echoed_done),
                "over_nats": over_nats,
                "published": (published, loom.wait(published.task_id, timeout=10)),
                "cancel": (cancelled, after_cancel),
                "agents": loom.agents(),
            }

    found = await asyncio.to_thread(scenario)
    done: Task = found["done"]
    assert done.status == TaskStatus.COMPLETED and done.result["answer"] == "42", done
    assert done.session_id == "s-sync" and done.instance_id == "w1"
    assert found["got"].status == TaskStatus.COMPLETED and found["got"].result == done.result
    assert found["again"].task_id == done.task_id and found["again"].status == TaskStatus.COMPLETED

    echoed, echoed_done = found["echoed"]
    # without wait, the task as it stands once routed: an echo may have finished by then (the
    # submission's own delivery to the dispatcher's consumer can route it before the API does)
    on_its_way = (TaskStatus.PENDING, TaskStatus.DISPATCHED, TaskStatus.RUNNING, TaskStatus.COMPLETED)
    assert echoed.status in on_its_way
    assert echoed_done.status == TaskStatus.COMPLETED and echoed_done.result == {"n": 1}
    assert found["over_nats"].status == TaskStatus.COMPLETED and found["over_nats"].result == {"n": 2}
    published, published_done = found["published"]
    assert published.status == TaskStatus.PENDING and published_done.result == {"n": 3}

    cancelled, after_cancel = found["cancel"]
    assert cancelled.task_id == after_cancel.task_id
    assert after_cancel.status == TaskStatus.CANCELLED

    agents = {a.agent_id: a for a in found["agents"]}
    assert {"calculator", "echo", "orchestrator"} <= set(agents)
    assert [i.instance_id for i in agents["calculator"].instances] == ["w1"]
    assert agents["calculator"].card is not None and "calculator" in agents["calculator"].card.tools


async def test_the_async_client_runs_many_streams_an_answer_and_decides_approvals(stack: Stack) -> None:
    await task_path(stack)
    async with async_client(stack) as loom:
        many = await asyncio.gather(*(loom.submit("echo", {"n": n}, wait=15) for n in range(20)))
        assert [t.status for t in many] == [TaskStatus.COMPLETED] * 20
        assert [t.result for t in many] == [{"n": n} for n in range(20)]
        assert len({t.task_id for t in many}) == 20

        over_nats = await loom.submit("echo", {"via": "nats"}, via="nats", wait=10)
        assert over_nats.status == TaskStatus.COMPLETED and over_nats.result == {"via": "nats"}

        # the answer of a stream task, chunk by chunk, then its end
        streaming = await loom.submit("calculator", {"script": STREAM_SCRIPT}, action="stream")
        items = [item async for item in loom.stream(streaming.task_id, timeout=20)]
        chunks = [i for i in items if isinstance(i, TaskStreamChunk)]
        assert isinstance(items[-1], StreamEnd) and items[-1].status == "completed"
        assert len(chunks) > 3 and [c.index for c in chunks] == list(range(len(chunks)))
        assert join_answer(chunks) == STREAMED == items[-1].result["answer"]
        # a task that is over streams only its end
        assert [i async for i in loom.stream(many[0].task_id, timeout=5)] == [
            StreamEnd(task_id=many[0].task_id, status="completed", result={"n": 0})
        ]

        # approvals: the call waits, is approved with other arguments, and runs
        guarded = {"approvalTools": ["calculator"]}
        approved = await loom.submit("calculator", SIX_TIMES_SEVEN, metadata=guarded)
        waiting = await reaches(loom, approved.task_id, TaskStatus.INPUT_REQUIRED)
        assert waiting.pending_approval is not None and waiting.pending_approval.tool == "calculator"
        resumed = await loom.approve(approved.task_id, arguments={"expression": "6*8"}, by="ann")
        assert resumed.status in (TaskStatus.PENDING, TaskStatus.DISPATCHED)
        done = await loom.wait(approved.task_id, timeout=20)
        assert done.status == TaskStatus.COMPLETED and done.result["answer"] == "48"
        assert [(d.approved, d.by) for d in done.approvals] == [(True, "ann")]

        rejected = await loom.submit("calculator", SIX_TIMES_SEVEN, metadata=guarded)
        await reaches(loom, rejected.task_id, TaskStatus.INPUT_REQUIRED)
        await loom.reject(rejected.task_id, by="ops", reason="too risky")
        done = await loom.wait(rejected.task_id, timeout=20)
        assert done.status == TaskStatus.COMPLETED and "rejected by ops: too risky" in done.result["answer"]

        # cancel a running task
        sleeper = await loom.submit("calculator", sleepy(30))
        await reaches(loom, sleeper.task_id, TaskStatus.RUNNING)
        await loom.cancel(sleeper.task_id)
        assert (await loom.wait(sleeper.task_id, timeout=10)).status == TaskStatus.CANCELLED


async def test_every_failure_is_a_typed_error(stack: Stack) -> None:
    await task_path(stack)
    async with async_client(stack) as loom:
        with pytest.raises(NotFound) as missing:
            await loom.get("no-such-task")
        assert missing.value.status == 404 and missing.value.code == "not_found"

        with pytest.raises(NotFound) as unknown:
            await loom.submit("calculater", SIX_TIMES_SEVEN)
        assert unknown.value.code == "unknown_agent" and "calculator" in unknown.value.suggestions

        first = await loom.submit("echo", {"v": 1}, task_id="fixed-id", wait=10)
        assert (await loom.submit("echo", {"v": 1}, task_id="fixed-id")).task_id == "fixed-id"
        with pytest.raises(Conflict) as conflict:
            await loom.submit("echo", {"v": 2}, task_id="fixed-id")
        assert conflict.value.code == "task_id_conflict" and conflict.value.details["differingFields"] == [
            "parameters"
        ]
        with pytest.raises(Conflict):
            await loom.cancel(first.task_id)  # it has ended
        with pytest.raises(Conflict) as not_waiting:
            await loom.approve(first.task_id)
        assert not_waiting.value.code == "not_waiting_for_approval"
        assert not_waiting.value.details["taskStatus"] == "completed"

        with pytest.raises(InvalidRequest) as invalid:
            await loom.submit("not an agent!", {})
        assert invalid.value.status == 422 and invalid.value.code == "invalid_request"
        assert [f.field for f in invalid.value.fields] == ["body.targetAgent"]

        # a wait that runs out, and a stream with nothing to say
        sleeper = await loom.submit("calculator", sleepy(30))
        started = time.monotonic()
        with pytest.raises(Timeout) as ran_out:
            await loom.wait(sleeper.task_id, timeout=0.5)
        assert time.monotonic() - started < 5
        assert ran_out.value.task is not None and not ran_out.value.task.is_terminal
        with pytest.raises(Timeout):
            async for _ in loom.stream(sleeper.task_id, timeout=0.5):
                pass
        await loom.cancel(sleeper.task_id)

    async with AsyncLoomClient(closed_url(), nats_url=f"nats://127.0.0.1:{free_port()}", timeout=2) as down:
        with pytest.raises(Unavailable) as refused:
            await down.get("x")
        assert refused.value.status is None and refused.value.code == "unavailable"
        with pytest.raises(Unavailable):
            await down.submit("echo", {}, via="nats")
    # NATS refusing the client's credentials: the server's reason, not only "no servers"
    wrong = urlsplit(stack.nats_url)._replace(
        netloc=f"intruder:wrong@127.0.0.1:{urlsplit(stack.nats_url).port}"
    )
    async with AsyncLoomClient(stack.api, nats_url=urlunsplit(wrong), timeout=2) as refused_nats:
        with pytest.raises(Unavailable, match="Authorization Violation"):
            await refused_nats.submit("echo", {}, via="nats")

    def blocking() -> tuple[LoomError, LoomError, LoomError]:
        with LoomClient(closed_url(), timeout=2) as offline, sync_client(stack) as online:
            errors = []
            calls = (lambda: offline.get("x"), lambda: online.get("nope"), lambda: online.wait("nope", 1))
            for call in calls:
                try:
                    call()
                except LoomError as exc:
                    errors.append(exc)
            return errors[0], errors[1], errors[2]

    offline, nope, nope_wait = await asyncio.to_thread(blocking)
    assert isinstance(offline, Unavailable)
    assert isinstance(nope, NotFound) and isinstance(nope_wait, NotFound)


async def stored(loom: AsyncLoomClient, task_id: str) -> None:
    """Wait until query has the task's terminal event (ingest writes asynchronously)."""

    async def ended() -> bool:
        try:
            detail = await loom.task_detail(task_id)
        except NotFound:
            return False
        return any(e.type in TERMINAL_TASK_EVENT_TYPES for e in detail.events)

    await wait_for(ended, 30, f"task {task_id} stored with its end")


async def test_search_sessions_traces_the_live_feed_and_replays(database_url: str, stack: Stack) -> None:
    query, replay = await everything(stack, database_url)
    session = f"s-{uuid.uuid4().hex[:8]}"
    async with async_client(stack, query_url=query.url, replay_url=replay.url) as loom:
        # the live feed of one task, subscribed before the task exists
        task_id = uuid.uuid4().hex
        received: list[CloudEvent] = []
        async with loom.live(task_id=task_id) as feed:
            done = await loom.submit(
                "calculator", SIX_TIMES_SEVEN, task_id=task_id, session_id=session, wait=10
            )
            assert done.status == TaskStatus.COMPLETED
            # the worker's events and the dispatcher's task.completed travel separately: wait for both
            while not {"task.completed", "agent.answer"} <= {e.type for e in received}:
                message = await feed.receive(timeout=10)
                assert isinstance(message, CloudEvent)
                received.append(message)
        assert {e.taskid for e in received} == {task_id}
        kinds = [e.type for e in received]
        assert {"task.submitted", "llm.usage", "tool.call", "tool.result", "agent.answer"} <= set(kinds)

        orchestrated = await loom.submit(
            "orchestrator", {"prompt": "what is 6*7; say hello"}, session_id=session, wait=20
        )
        assert orchestrated.status == TaskStatus.COMPLETED
        echoes = [await loom.submit("echo", {"n": n}, session_id=session, wait=10) for n in range(3)]
        for task in (done, orchestrated, *echoes):
            await stored(loom, task.task_id)

        # the search, one page and page after page
        page = await loom.tasks(agent="calculator", session=session)
        assert [t.task_id for t in page.tasks][-1] == task_id
        assert page.counts["completed"] == page.total == 2  # the orchestrator's calculator child too
        listed = [t.task_id async for t in loom.iter_tasks(page_size=2, session=session)]
        assert len(listed) == 7 and len(set(listed)) == 7  # 5 tasks + the orchestrator's 2 children
        assert listed[:3] == [t.task_id for t in reversed(echoes)]
        assert [t.task_id async for t in loom.iter_tasks(session=session, max_tasks=2)] == listed[:2]
        pages = [page async for page in loom.iter_pages(page_size=3, session=session)]
        assert [len(p.tasks) for p in pages] == [3, 3, 1] and {p.total for p in pages} == {7}
        assert [t.task_id for p in pages for t in p.tasks] == listed
        with pytest.raises(InvalidRequest) as bad_status:
            await loom.tasks(status="bogus")
        assert bad_status.value.fields and bad_status.value.fields[0].field == "query.status"

        detail = await loom.session(session)
        assert detail.totals.tasks == 7 and detail.totals.counts == {"completed": 7}
        assert detail.totals.llm_calls > 0 and detail.tasks[0].task_id == task_id
        with pytest.raises(NotFound):
            await loom.session("no-such-session")

        # the trace: the orchestrator, its steps and its two children
        tree = await loom.trace(orchestrated.task_id)
        assert tree.task is not None and tree.task.status == "completed"
        assert [c.task.target_agent for c in tree.children if c.task] == ["calculator", "echo"]
        calculator = tree.children[0]
        assert [s.kind for s in calculator.steps] == ["llm", "tool", "llm", "answer"]
        assert calculator.steps[1].label.startswith("tool calculator(expression=6*7) → 42")
        assert calculator.input_tokens > 0 and tree.input_tokens >= calculator.input_tokens
        assert tree.duration_s is not None and tree.duration_s > 0

        # a replay session over the first task's events
        replayed = await loom.create_replay(task_id=task_id)
        assert replayed.total >= len(received) and replayed.index == -1
        first = await loom.replay_step(replayed.session_id)
        assert first.index == 0 and not first.has_previous and first.event["type"].endswith("task.submitted")
        with pytest.raises(Conflict):
            await loom.replay_step(replayed.session_id, "backward")
        last = await loom.replay_jump(replayed.session_id, replayed.total - 1, state="task")
        assert last.index == replayed.total - 1 and not last.has_next and last.state is not None
        with pytest.raises(Conflict):
            await loom.replay_step(replayed.session_id)
        with pytest.raises(InvalidRequest):
            await loom.replay_jump(replayed.session_id, replayed.total + 5)
        back = await loom.replay_step(replayed.session_id, "backward")
        assert back.index == replayed.total - 2
        await loom.delete_replay(replayed.session_id)
        with pytest.raises(NotFound):
            await loom.replay_session(replayed.session_id)

    def blocking() -> tuple[list[str], int]:
        with sync_client(stack, query_url=query.url) as sync:
            ids = [t.task_id for t in sync.iter_tasks(page_size=3, session=session)]
            return ids, len(sync.trace(orchestrated.task_id).walk())

    ids, nodes = await asyncio.to_thread(blocking)
    assert ids == listed and nodes == 3
