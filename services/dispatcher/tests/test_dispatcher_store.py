"""TaskStore against a real Redis (a fresh key prefix per test; `make test` needs Redis
reachable at LOOM_REDIS_URL): the compare-and-set transitions, the indexes, stale hints and
replicas racing on one task."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from loom_dispatcher.store import Change, Scores, TaskStore
from loom_protocol import Task, TaskStatus, is_terminal
from redis.asyncio import Redis


def assign(instance_id: str, deadline: float):  # type: ignore[no-untyped-def]
    def step(cur: Task, _: Scores) -> Change | None:
        if cur.status is not TaskStatus.PENDING:
            return None
        new = cur.with_status(TaskStatus.DISPATCHED, attempt=cur.attempt + 1, instance_id=instance_id)
        return Change(new, deadline=deadline)

    return step


def running(cur: Task, scores: Scores) -> Change | None:
    if cur.status is not TaskStatus.DISPATCHED:
        return None
    return Change(cur.with_status(TaskStatus.RUNNING), deadline=scores.deadline)


def complete(cur: Task, _: Scores) -> Change | None:
    if is_terminal(cur.status):
        return None
    return Change(cur.with_status(TaskStatus.COMPLETED, result={"ok": True}))


async def indexes(redis: Redis, prefix: str, task_id: str, instance_id: str) -> tuple[object, ...]:
    return (
        await redis.zscore(f"{prefix}:inflight", task_id),
        await redis.zscore(f"{prefix}:waiting", task_id),
        await redis.sismember(f"{prefix}:instance:{instance_id}:tasks", task_id),
    )


async def test_create_is_idempotent_and_puts_the_task_in_waiting(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    store = TaskStore(client, prefix)
    task = Task(target_agent="echo")
    assert await store.create(task, retry_at=123.25)
    assert not await store.create(task.model_copy(update={"parameters": {"v": 2}}), retry_at=1.0)
    got = await store.get(task.task_id)
    assert got is not None and got.parameters == {}
    assert await client.zscore(f"{prefix}:waiting", task.task_id) == 123.25


async def test_life_cycle_moves_the_indexes_with_the_task(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    store = TaskStore(client, prefix)
    task = Task(target_agent="echo")
    await store.create(task, retry_at=time.time() + 5)
    deadline = time.time() + 60
    new = await store.update(task.task_id, assign("w1", deadline))
    assert new is not None and new.status is TaskStatus.DISPATCHED and new.attempt == 1
    assert await indexes(client, prefix, task.task_id, "w1") == (pytest.approx(deadline), None, 1)
    new = await store.update(task.task_id, running)
    assert new is not None and new.status is TaskStatus.RUNNING
    assert await indexes(client, prefix, task.task_id, "w1") == (pytest.approx(deadline), None, 1)
    new = await store.update(task.task_id, complete)
    assert new is not None and new.status is TaskStatus.COMPLETED
    assert await indexes(client, prefix, task.task_id, "w1") == (None, None, 0)
    assert await store.update(task.task_id, complete) is None  # already decided
    stored = await store.get(task.task_id)
    assert stored is not None and stored.status is TaskStatus.COMPLETED and stored.result == {"ok": True}


async def test_unknown_task_is_none(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    assert await TaskStore(client, prefix).update("nope", complete) is None


async def test_a_stale_hint_never_wins_over_another_replica(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    mine, other = TaskStore(client, prefix), TaskStore(client, prefix)
    task = Task(target_agent="echo")
    await mine.create(task, retry_at=time.time() + 5)
    await mine.update(task.task_id, assign("w1", time.time() + 60))  # mine's hint: dispatched to w1
    # the other replica re-dispatches it (attempt 2 on w2) without mine knowing
    back = await other.update(
        task.task_id,
        lambda cur, _: Change(cur.with_status(TaskStatus.PENDING, error="late"), retry_at=time.time()),
    )
    assert back is not None
    await other.update(task.task_id, assign("w2", time.time() + 60))

    def report_from(instance_id: str, attempt: int):  # type: ignore[no-untyped-def]
        def step(cur: Task, scores: Scores) -> Change | None:
            if cur.attempt != attempt or cur.instance_id != instance_id:
                return None
            return running(cur, scores)

        return step

    # w1's report of attempt 1 matches mine's stale hint, but the compare fails and the
    # transition, decided again on the truth, ignores the superseded attempt
    assert await mine.update(task.task_id, report_from("w1", 1)) is None
    # w2's report does not match mine's hint: declined on the hint, re-read, applied
    new = await mine.update(task.task_id, report_from("w2", 2))
    assert new is not None and new.status is TaskStatus.RUNNING and new.instance_id == "w2"
    inflight, waiting, at_w1 = await indexes(client, prefix, task.task_id, "w1")
    assert inflight is not None and waiting is None and at_w1 == 0
    assert await client.sismember(f"{prefix}:instance:w2:tasks", task.task_id) == 1


async def test_same_score_rewrite_is_seen_by_the_compare(redis: tuple[Redis, str]) -> None:
    """A change of the waiting score alone (the task's JSON unchanged) still fails a stale compare."""
    client, prefix = redis
    mine, other = TaskStore(client, prefix), TaskStore(client, prefix)
    task = Task(target_agent="echo")
    await mine.create(task, retry_at=100.0)
    await other.update(task.task_id, lambda cur, _: Change(cur, retry_at=200.0))
    seen: list[float | None] = []

    def look(cur: Task, scores: Scores) -> Change | None:
        seen.append(scores.retry_at)
        return Change(cur, retry_at=(scores.retry_at or 0) + 1)

    await mine.update(task.task_id, look)
    assert seen == [100.0, 200.0]  # the hint, then the truth
    assert await client.zscore(f"{prefix}:waiting", task.task_id) == 201.0


async def test_replicas_racing_on_one_transition_only_one_wins(redis: tuple[Redis, str]) -> None:
    client, prefix = redis
    stores = [TaskStore(client, prefix) for _ in range(8)]
    tasks = [Task(target_agent="echo") for _ in range(20)]
    for task in tasks:
        await stores[0].create(task, retry_at=time.time() + 5)
    for task in tasks:
        # every replica starts from the same (now shared) snapshot
        snap = await stores[0].read(task.task_id)
        results = await asyncio.gather(
            *(
                s.update(task.task_id, assign(f"w{i}", time.time() + 60), known=snap)
                for i, s in enumerate(stores)
            )
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        stored = await stores[0].get(task.task_id)
        assert stored is not None and stored.attempt == 1 and stored.instance_id == winners[0].instance_id
        members = [
            await client.sismember(f"{prefix}:instance:w{i}:tasks", task.task_id) for i in range(len(stores))
        ]
        assert sum(members) == 1


async def test_script_calls_made_together_share_a_pipeline_and_survive_noscript(
    redis: tuple[Redis, str],
) -> None:
    from loom_dispatcher.scripts import ScriptBatcher

    client, prefix = redis
    batcher = ScriptBatcher(client)
    # a script Redis has never seen (unique text): the first calls get NOSCRIPT, then it is loaded
    script = batcher.script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])")
    key = f"{prefix}:counter"
    results = await asyncio.gather(*(script([key], [str(i * 1000)]) for i in range(50)))
    assert sorted(r % 1000 for r in results) == list(range(1, 51))  # 50 INCRs, each atomic
    assert [r // 1000 for r in results] == list(range(50))  # each caller got its own answer
    failing = batcher.script("return redis.error_reply('nope')")
    with pytest.raises(Exception, match="nope"):
        await asyncio.gather(failing([key], []), script([key], ["0"]))
    assert await script([key], ["0"]) == 52


async def test_plain_reads_share_the_scripts_pipeline(redis: tuple[Redis, str]) -> None:
    from loom_dispatcher.scripts import ScriptBatcher

    client, prefix = redis
    batcher = ScriptBatcher(client)
    script = batcher.script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")  # NOSCRIPT at first
    counter, value = f"{prefix}:counter", f"{prefix}:value"
    await client.set(value, "stored")
    # in one turn: reads beside script calls that are sent again once the script is loaded
    answers = await asyncio.gather(
        batcher.command("GET", value), script([counter], []), batcher.command("GET", f"{prefix}:absent")
    )
    assert answers in (["stored", 1, None], [b"stored", 1, None])
    assert await client.get(counter) in ("1", b"1")  # loaded, then run once
