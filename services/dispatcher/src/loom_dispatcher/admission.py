"""Which submissions the dispatcher takes: known agents, the wait-for-agent flag, same or
conflicting resubmissions. Pure decisions plus one small cache; the I/O is injected.

- **Known agent.** An agent is known once the registry has seen a heartbeat naming it (the
  registry keeps that set in Redis and answers it on ``loom.registry.agents``). The set only
  grows, so a name found in the cache stays valid; a miss asks the registry again (concurrent
  misses share one request), so an agent whose first instance just came up is never refused.
- **Waiting for an agent.** ``metadata.waitForAgent: true`` (or ``?waitForAgent=true`` on
  ``POST /api/tasks``, which sets it) keeps today's behaviour for an agent not known yet: the
  task waits for an instance up to the no-instance timeout.
- **The same submission.** Resubmitting a task id is idempotent when the fields the user sent
  are the same: ``sourceAgent``, ``targetAgent``, ``action``, ``parameters``, ``metadata``
  (without the keys Loom itself writes there: ``waitForAgent``, ``cancelRequested``),
  ``parentTaskId`` and ``sessionId``, compared as JSON values. Anything else conflicts.
- **What can be carried.** A task message larger than a task may be, or a submission whose
  task would grow past that once re-serialised (``1e5`` is written ``100000.0``), or one with
  a NUL, NaN or Infinity in its parameters or metadata, is refused before it is handled
  (:func:`screen_message`), so nothing accepted can later be too large or unstorable to forward.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from loom_protocol import Task, subjects
from loom_protocol.limits import MAX_TASK_BYTES, check_json_value

from .errors import RegistryUnavailable

WAIT_FOR_AGENT = "waitForAgent"
"""The metadata key (and query parameter) that asks to wait for an agent not known yet."""
_LOOM_METADATA = frozenset({WAIT_FOR_AGENT, "cancelRequested"})


class Admission(StrEnum):
    """What :meth:`Dispatcher.submit` did with a submission."""

    ACCEPTED = "accepted"  # stored (or found stored by the API) and routed
    DUPLICATE = "duplicate"  # the task id is known with the same submission: nothing to do
    CONFLICT = "conflict"  # the task id is known with a different submission
    UNKNOWN_AGENT = "unknown_agent"  # dead-lettered: no such agent, and no wish to wait


_SUBMITTED_PREFIX = subjects.TASK_SUBMITTED_ALL.removesuffix("*")
_LOOK_CLOSER_BYTES = MAX_TASK_BYTES // 4  # past this, a body could grow past the limit when re-serialised
_SUSPECT = (b"\\u0000", b"NaN", b"Infinity")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (numbers must be finite)")


def screen_message(subject: str, body: bytes) -> str | None:
    """Why a message on the task path must be dead-lettered unhandled, or None to handle it.

    Every message: at most :data:`~loom_protocol.limits.MAX_TASK_BYTES`. A submission also:
    at most that once re-serialised, and no NUL, NaN or Infinity anywhere in it. Cheap for the
    common case: a submission is only parsed here when it is large or holds a suspect token.

    Args:
        subject: The subject the message came on.
        body: Its payload.

    Returns:
        The reason, or None.
    """
    if len(body) > MAX_TASK_BYTES:
        return (
            f"message is {len(body)} bytes; a task message may be at most {MAX_TASK_BYTES} bytes "
            "(NATS max_payload less room for the headers and fields added when it is forwarded)"
        )
    if not subject.startswith(_SUBMITTED_PREFIX):
        return None
    if len(body) <= _LOOK_CLOSER_BYTES and not any(token in body for token in _SUSPECT):
        return None
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # not JSON at all: the handler's model says why
        return str(exc) if "JSON number" in str(exc) else None
    if isinstance(value, dict):
        for key in ("parameters", "metadata"):
            if (reason := check_json_value(value.get(key))) is not None:
                return f"{key} {reason}"
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_TASK_BYTES:
        return f"the task is {size} bytes as JSON; a task may be at most {MAX_TASK_BYTES} bytes"
    return None


def wants_to_wait(task: Task) -> bool:
    """True when the submitter asked to wait for an agent not known yet."""
    return task.metadata.get(WAIT_FOR_AGENT) is True


def submission_of(task: Task) -> dict[str, Any]:
    """The fields of a task its submitter chose (what "the same submission" compares)."""
    return {
        "sourceAgent": task.source_agent,
        "targetAgent": task.target_agent,
        "action": task.action.value,
        "parameters": task.parameters,
        "metadata": {k: v for k, v in task.metadata.items() if k not in _LOOM_METADATA},
        "parentTaskId": task.parent_task_id,
        "sessionId": task.session_id,
    }


def differing_fields(stored: Task, submitted: Task) -> list[str]:
    """The submission fields in which ``submitted`` differs from ``stored`` (empty: the same)."""
    a, b = submission_of(stored), submission_of(submitted)
    return [name for name in a if a[name] != b[name]]


def unknown_agent_reason(agent_id: str, known: list[str]) -> tuple[str, list[str]]:
    """The reason a task for ``agent_id`` is refused, and the closest known names."""
    close = difflib.get_close_matches(agent_id, known, n=3, cutoff=0.6)
    reason = f"unknown agent {agent_id!r}: no instance of it ever sent a heartbeat"
    if close:
        reason += "; did you mean " + " or ".join(repr(name) for name in close) + "?"
    reason += f" (set {WAIT_FOR_AGENT} to wait for it)"
    return reason, close


class AgentDirectory:
    """The agents the registry knows, cached; a miss asks the registry again.

    ``fetch`` returns every known agent id and raises :class:`RegistryUnavailable` when the
    registry does not answer. Concurrent misses share one fetch, and a miss is only answered
    from a fetch that started after it arrived. After a failed fetch, misses are answered None
    without asking for ``retry_after_s`` (a registry that is down is not asked once per task).
    """

    def __init__(self, fetch: Callable[[], Awaitable[list[str]]], retry_after_s: float = 1.0) -> None:
        self._fetch = fetch
        self._retry_after_s = retry_after_s
        self._failed_at = -math.inf
        self._known: set[str] = set()
        self._sorted: list[str] = []
        self._started = 0  # fetches started so far
        self._inflight: asyncio.Future[None] | None = None

    @property
    def known(self) -> list[str]:
        """The known agent ids as last fetched, sorted."""
        return self._sorted

    async def is_known(self, agent_id: str) -> bool | None:
        """True or False as the registry knows it; None when the registry did not answer."""
        if agent_id in self._known:
            return True
        if time.monotonic() - self._failed_at < self._retry_after_s:
            return None
        arrived = self._started
        try:
            while True:
                if self._inflight is None:
                    self._started += 1
                    self._inflight = asyncio.ensure_future(self._load())
                    self._inflight.add_done_callback(self._clear)
                number, fut = self._started, self._inflight
                await asyncio.shield(fut)
                if number > arrived:
                    break
        except RegistryUnavailable:
            return None
        return agent_id in self._known

    async def _load(self) -> None:
        try:
            agents = await self._fetch()
        except Exception as exc:  # no answer, or one that does not parse: not known either way
            self._failed_at = time.monotonic()
            if isinstance(exc, RegistryUnavailable):
                raise
            raise RegistryUnavailable(f"the registry's known agents were unreadable: {exc!r}") from exc
        self._known.update(agents)
        self._sorted = sorted(self._known)

    def _clear(self, fut: asyncio.Future[None]) -> None:
        if self._inflight is fut:
            self._inflight = None
        if not fut.cancelled():
            fut.exception()  # retrieved here too: a failure nobody awaits is not "never retrieved"
