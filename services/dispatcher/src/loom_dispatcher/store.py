"""Task state in Redis, shared by every dispatcher replica.

One JSON document per task plus the indexes that always change in the same atomic step as
the task itself (so a crash can never leave a dispatched task untracked):

- ``inflight``  (zset, score = deadline): tasks at a worker, and tasks waiting for a person's
  approval (``input_required``, score = when the wait runs out); the sweeper acts on late ones.
- ``waiting``   (zset, score = next try): tasks waiting for an instance or a retry backoff.
- ``instance:<id>:tasks`` (set): what an instance holds, for re-dispatch on ``member.down``.
- ``children:<parent id>`` (set): the tasks created with that ``parentTaskId``, written when the
  child is created, so that cancelling a task reaches its children. Never shrinks (nothing
  deletes tasks either).

Replicas race on the same task only through :meth:`TaskStore.update`, an optimistic
compare-and-set: the transition (plain Python, see dispatching.py) is computed from a snapshot
of the task and its two index scores, and one Lua script applies the result only if the task
and both scores are still exactly what the snapshot saw; otherwise the script answers with the
current snapshot and the transition is computed again. So exactly one replica wins each
transition, as with WATCH/MULTI, in one round trip instead of five (and the script calls made
together share one pipeline: scripts.py).

The script holds no rule of the state machine: it compares and writes what Python decided.
The rules (which status may follow which, which index a status lives in) stay in Python.

A snapshot may come from this replica's last write (a small LRU of hints): a hint saves the
read; a stale hint costs nothing but a failed compare, after which the script's answer is the
truth. A transition that declines to act on a hint is re-checked on a fresh read before the
answer "nothing to do" is believed.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from loom_protocol import PICK_FUNCTION, Task, TaskStatus, is_terminal
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .scripts import ScriptBatcher


@dataclass(frozen=True)
class Scores:
    """Where a task sits in the indexes right now (None: not there)."""

    deadline: float | None
    retry_at: float | None


@dataclass(frozen=True)
class Change:
    """The new state of a task and, for non-terminal states, its index score."""

    task: Task
    deadline: float | None = None  # DISPATCHED / RUNNING; INPUT_REQUIRED: when the wait runs out
    retry_at: float | None = None  # PENDING, waiting for an instance or a backoff


Transition = Callable[[Task, Scores], Change | None]


@dataclass(frozen=True)
class Snapshot:
    """A task as stored (its exact JSON) and its index scores, at one moment."""

    raw: str
    task: Task
    scores: Scores


# KEYS: task, inflight, waiting, no-instance hash, the old instance's set, the new instance's set
# ARGV[1]: "id|mode|expected deadline|expected retry|new deadline|new retry|leave|member|clear"
#   mode 'read' | 'cas'; a score '' means "not in that index"; leave '1': leave the old
#   instance's set; member 'add' | 'rem' | '': the new instance's set; clear '1': drop the
#   no-instance mark. (One packed argument: the client's cost grows with the argument count.)
# ARGV[2]: the expected raw task, ARGV[3]: the new raw task.
# Answers 1 when written, else the current {raw, deadline, retry} (nil where absent).
_TRANSITION_LUA = """
local f = {}
for field in string.gmatch(ARGV[1] .. '|', '([^|]*)|') do f[#f + 1] = field end
local id = f[1]
local raw = redis.call('GET', KEYS[1])
local deadline = redis.call('ZSCORE', KEYS[2], id)
local retry = redis.call('ZSCORE', KEYS[3], id)
local function same(actual, expected)
  if expected == '' then return not actual end
  return actual and tonumber(actual) == tonumber(expected)
end
if f[2] == 'cas' and raw and raw == ARGV[2] and same(deadline, f[3]) and same(retry, f[4]) then
  redis.call('SET', KEYS[1], ARGV[3])
  if f[5] == '' then redis.call('ZREM', KEYS[2], id) else redis.call('ZADD', KEYS[2], f[5], id) end
  if f[6] == '' then redis.call('ZREM', KEYS[3], id) else redis.call('ZADD', KEYS[3], f[6], id) end
  if f[7] == '1' then redis.call('SREM', KEYS[5], id) end
  if f[8] == 'add' then redis.call('SADD', KEYS[6], id) end
  if f[8] == 'rem' then redis.call('SREM', KEYS[6], id) end
  if f[9] == '1' then redis.call('HDEL', KEYS[4], id) end
  return 1
end
return {raw, deadline, retry}
"""

# KEYS: task, inflight, waiting, the instance's set, the parent's children set.
# ARGV: raw, task id, deadline ('' = not in flight), retry score ('' = not waiting either),
#   '1' when the task has a parent ('' = none: KEYS[5] is a placeholder, untouched).
# A new task goes straight to its first place: waiting (pending), in flight at an instance
# (dispatched with its first pick), or nowhere (terminal from the start: refused); a child is
# listed under its parent in the same step.
# 1 when created, 0 when the id is known (nothing written).
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[2])
elseif ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
end
if ARGV[5] == '1' then redis.call('SADD', KEYS[5], ARGV[2]) end
return 1
"""

# A new task stored where its pick puts it, picking and storing in one atomic step (the pick is
# :data:`~loom_protocol.PICK_FUNCTION`, the registry's own round robin).
# KEYS: task, inflight, waiting, the parent's children set (or a placeholder), then the pick's.
# ARGV: task id, '1' when it has a parent, the pending task's raw, its retry score, the
#   dispatched task's raw with ARGV[7] where the instance id goes, its deadline, ARGV[7], the
#   instance sets' key prefix and suffix, then the pick's arguments.
# {0} when the id is known (nothing written, nothing picked); {1, false, 0} when no instance is
# live (stored pending); {1, instance, candidates, raw} when stored dispatched to the instance.
_CREATE_AT_PICK_LUA = (
    PICK_FUNCTION
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0} end
local pick_keys, pick_argv = {}, {}
for i = 5, #KEYS do pick_keys[#pick_keys + 1] = KEYS[i] end
for i = 10, #ARGV do pick_argv[#pick_argv + 1] = ARGV[i] end
local picked = pick(pick_keys, pick_argv)
local id = picked[1]
if ARGV[2] == '1' then redis.call('SADD', KEYS[4], ARGV[1]) end
if not id then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  return {1, false, 0}
end
local s, e = string.find(ARGV[5], ARGV[7], 1, true)
local raw = string.sub(ARGV[5], 1, s - 1) .. id .. string.sub(ARGV[5], e + 1)
redis.call('SET', KEYS[1], raw)
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('SADD', ARGV[8] .. id .. ARGV[9], ARGV[1])
return {1, id, picked[2], raw}
"""
)


@dataclass(frozen=True)
class PickCall:
    """The registry's pick as script arguments (``RegistryKeys.pick_keys`` / ``pick_args``)."""

    keys: list[str]
    args: list[str]


@dataclass(frozen=True)
class Placed:
    """A new task as :meth:`TaskStore.create_at_pick` stored it."""

    task: Task  # dispatched to ``instance_id`` (attempt 1), or pending when no instance was live
    instance_id: str | None
    candidates: int


def _score_arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _score_of(value: str | bytes | None) -> float | None:
    return None if value is None else float(value)


def _text(values: Iterable[Any]) -> list[str]:
    """Redis replies as str (the client decodes responses; its stubs say bytes | str)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class TaskStore:
    def __init__(self, redis: Redis, prefix: str, hints: int = 4096) -> None:
        self._redis = redis
        self._p = prefix
        self.scripts = self._scripts = ScriptBatcher(redis)  # shared with the picker (picking.py)
        self._transition = self._scripts.script(_TRANSITION_LUA)
        self._create = self._scripts.script(_CREATE_LUA)
        self._create_at_pick = self._scripts.script(_CREATE_AT_PICK_LUA)
        self._hints: OrderedDict[str, Snapshot] = OrderedDict()
        self._max_hints = hints

    def _key(self, task_id: str) -> str:
        return f"{self._p}:task:{task_id}"

    @property
    def _inflight(self) -> str:
        return f"{self._p}:inflight"

    @property
    def _waiting(self) -> str:
        return f"{self._p}:waiting"

    @property
    def _no_instance(self) -> str:
        return f"{self._p}:no-instance-since"

    def _instance(self, instance_id: str) -> str:
        head, tail = self._instance_parts
        return f"{head}{instance_id}{tail}"

    @property
    def _instance_parts(self) -> tuple[str, str]:
        """An instance's task set key around its id (a script builds it for the id it picks)."""
        return f"{self._p}:instance:", ":tasks"

    def _children(self, parent_task_id: str) -> str:
        return f"{self._p}:children:{parent_task_id}"

    def _children_key(self, task: Task) -> str:
        """The set a new task joins: its parent's children, else a placeholder no script touches."""
        parent = task.parent_task_id
        return self._children(parent) if parent else self._key(task.task_id)

    # -- hints: this replica's last known snapshot of a task (never trusted without a compare) --
    def _remember(self, task_id: str, snap: Snapshot) -> None:
        if is_terminal(snap.task.status):
            self._hints.pop(task_id, None)
            return
        self._hints[task_id] = snap
        self._hints.move_to_end(task_id)
        while len(self._hints) > self._max_hints:
            self._hints.popitem(last=False)

    def hint(self, task_id: str) -> Snapshot | None:
        return self._hints.get(task_id)

    async def ping(self) -> bool:
        """True when Redis answers (for /readyz)."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def create(self, task: Task, retry_at: float | None, *, deadline: float | None = None) -> bool:
        """Store a new task; False when the task id is already known (idempotency).

        A pending task waits (score ``retry_at``); a task created already dispatched (with
        ``deadline``) is in flight at its instance from the start; a terminal one (both None)
        is in no index. A task with a ``parent_task_id`` joins its parent's children.
        """
        if retry_at is None and deadline is None and not is_terminal(task.status):
            raise ValueError(f"task {task.task_id}: a non-terminal task needs a place (retry_at or deadline)")
        raw = task.to_json().decode()
        in_flight = deadline is not None and task.instance_id is not None
        member_key = self._key(task.task_id)  # a placeholder, untouched, unless in flight
        if in_flight and task.instance_id:
            member_key = self._instance(task.instance_id)
        created = await self._create(
            keys=[
                self._key(task.task_id),
                self._inflight,
                self._waiting,
                member_key,
                self._children_key(task),
            ],
            args=[
                raw,
                task.task_id,
                _score_arg(deadline if in_flight else None),
                _score_arg(retry_at),
                "1" if task.parent_task_id else "",
            ],
        )
        if created:
            scores = Scores(deadline=deadline, retry_at=None) if in_flight else Scores(None, retry_at)
            self._remember(task.task_id, Snapshot(raw, task, scores))
        return bool(created)

    async def create_at_pick(
        self, task: Task, pick: PickCall, *, retry_at: float, deadline: float
    ) -> Placed | None:
        """Store a new task at the instance a pick chooses, picking in the same script (one
        round trip instead of a pick and a create): dispatched there (attempt 1, in flight until
        ``deadline``), or pending until ``retry_at`` when no instance is live. None when the
        task id is already known: nothing is written and nothing picked (the rotation does not
        move for a duplicate). ``task`` is the pending task, without a parent it must join."""
        placeholder = f"loom-pick-{uuid.uuid4().hex}"  # an instance id no instance has
        template = task.with_status(TaskStatus.DISPATCHED, attempt=1, instance_id=placeholder)
        pending_raw = task.to_json().decode()
        answer = await self._create_at_pick(
            keys=[
                self._key(task.task_id),
                self._inflight,
                self._waiting,
                self._children_key(task),
                *pick.keys,
            ],
            args=[
                task.task_id,
                "1" if task.parent_task_id else "",
                pending_raw,
                _score_arg(retry_at),
                template.to_json().decode(),
                _score_arg(deadline),
                placeholder,
                *self._instance_parts,
                *pick.args,
            ],
        )
        if int(answer[0]) == 0:
            return None
        if answer[1] is None:
            self._remember(task.task_id, Snapshot(pending_raw, task, Scores(None, retry_at)))
            return Placed(task, None, 0)
        instance_id, raw = str(answer[1]), str(answer[3])
        first = template.model_copy(update={"instance_id": instance_id})
        self._remember(task.task_id, Snapshot(raw, first, Scores(deadline, None)))
        return Placed(first, instance_id, int(answer[2]))

    async def get(self, task_id: str) -> Task | None:
        # in the scripts' pipeline: the API's reads of concurrent requests share one round trip
        raw = await self._scripts.command("GET", self._key(task_id))
        return Task.from_json(raw) if raw is not None else None

    async def read(self, task_id: str) -> Snapshot | None:
        """The task and its scores as they are now (one round trip), or None when unknown."""
        answer = await self._script(task_id, None)
        assert not isinstance(answer, int)
        return self._snapshot(answer)

    def _snapshot(self, answer: list[str | None]) -> Snapshot | None:
        raw, deadline, retry = answer
        if raw is None:
            return None
        return Snapshot(raw, Task.from_json(raw), Scores(_score_of(deadline), _score_of(retry)))

    async def _script(self, task_id: str, write: tuple[Snapshot, Snapshot] | None) -> int | list[str | None]:
        """Read the task (``write`` None), or write ``write = (expected, new)`` if still current."""
        leave = member = ""
        leave_key = member_key = self._key(task_id)  # placeholders, untouched when not flagged
        if write is None:
            args = [f"{task_id}|read", "", ""]
        else:
            expected, new = write
            cur, task = expected.task, new.task
            if cur.instance_id and cur.instance_id != task.instance_id:
                leave, leave_key = "1", self._instance(cur.instance_id)
            if task.instance_id:
                # at a worker: the instance holds it; terminal or pending again: it does not
                member = "add" if new.scores.deadline is not None else "rem"
                member_key = self._instance(task.instance_id)
            fields = (
                task_id,
                "cas",
                _score_arg(expected.scores.deadline),
                _score_arg(expected.scores.retry_at),
                _score_arg(new.scores.deadline),
                _score_arg(new.scores.retry_at),
                leave,
                member,
                "1" if task.status is not TaskStatus.PENDING else "",
            )
            args = ["|".join(fields), expected.raw, new.raw]
        keys = [self._key(task_id), self._inflight, self._waiting, self._no_instance, leave_key, member_key]
        answer: int | list[str | None] = await self._transition(keys=keys, args=args)
        return answer

    @staticmethod
    def _placement(expected: Snapshot, change: Change) -> Scores:
        """The index scores of the new state: a deadline, a retry time, or neither (terminal)."""
        status = change.task.status
        if is_terminal(status):
            return Scores(deadline=None, retry_at=None)
        if status in (TaskStatus.DISPATCHED, TaskStatus.RUNNING):
            return Scores(deadline=change.deadline or expected.scores.deadline or 0.0, retry_at=None)
        if status is TaskStatus.INPUT_REQUIRED:  # in flight with no instance: until the wait runs out
            if change.deadline is None:
                raise ValueError(f"task {change.task.task_id}: waiting for approval needs a deadline")
            return Scores(deadline=change.deadline, retry_at=None)
        return Scores(deadline=None, retry_at=change.retry_at or time.time())

    async def update(
        self, task_id: str, transition: Transition, known: Snapshot | None = None
    ) -> Task | None:
        """Apply ``transition`` atomically; None when the task is unknown or nothing changed.

        ``known`` (else this replica's hint) saves the first read when it is still current.
        """
        snap = known or self._hints.get(task_id)
        fresh = False
        if snap is None:
            snap, fresh = await self.read(task_id), True
        while True:
            if snap is None:
                self._hints.pop(task_id, None)
                return None
            change = transition(snap.task, snap.scores)
            if change is None:
                if fresh:
                    self._remember(task_id, snap)
                    return None
                snap, fresh = await self.read(task_id), True  # the hint may be stale: ask again
                continue
            new = Snapshot(change.task.to_json().decode(), change.task, self._placement(snap, change))
            answer = await self._script(task_id, (snap, new))
            if isinstance(answer, int):
                self._remember(task_id, new)
                return change.task
            snap, fresh = self._snapshot(answer), True  # someone else moved it: decide again

    async def no_instance_since(self, task_id: str, now: float) -> float:
        """When the registry first said there is no instance for this task (set on first call)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self._no_instance, task_id, now)
            pipe.hget(self._no_instance, task_id)
            _, since = await pipe.execute()
        return float(since or now)

    async def due_inflight(self, now: float, limit: int = 500) -> list[str]:
        return _text(await self._redis.zrangebyscore(self._inflight, 0, now, start=0, num=limit))

    async def due_waiting(self, now: float, limit: int = 500) -> list[str]:
        return _text(await self._redis.zrangebyscore(self._waiting, 0, now, start=0, num=limit))

    async def tasks_of_instance(self, instance_id: str) -> list[str]:
        return _text(await self._redis.smembers(self._instance(instance_id)))

    async def children(self, parent_task_id: str) -> list[str]:
        """The ids of the tasks created with ``parent_task_id`` as their parent."""
        return _text(await self._redis.smembers(self._children(parent_task_id)))
