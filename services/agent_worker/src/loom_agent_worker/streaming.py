"""Answer chunks of streaming tasks (``action: "stream"``) out of the worker.

Each chunk is a ``TaskStreamChunk`` on ``loom.stream.<task_id>``, published on core NATS: not
stored (the answer is durable in the task's result and its ``agent.answer`` event), best effort
(a failed publish is counted and logged, never fails the task). The dispatcher re-serves the
chunks as Server-Sent Events on ``GET /api/tasks/{task_id}/stream``.
"""

from __future__ import annotations

import logging

from loom_protocol import Task, TaskStreamChunk, subjects
from prometheus_client import Counter

from .outbox import Outbox

log = logging.getLogger(__name__)

CHUNKS = Counter("loom_worker_stream_chunks_total", "Answer chunks published by streaming tasks")
CHUNKS_LOST = Counter("loom_worker_stream_chunks_lost_total", "Answer chunks that could not be published")
_JSON = {"content-type": "application/json"}


class NatsAnswerStream:
    """The ``AnswerStream`` of one attempt of one task: numbered chunks on its subject."""

    def __init__(self, outbox: Outbox, task: Task) -> None:
        self._outbox = outbox
        self._task = task
        self._subject = subjects.task_stream(task.task_id)
        self._index = 0
        self.finished = False

    async def delta(self, text: str, *, step: int) -> None:
        if text:
            await self._send(delta=text, step=step)

    async def discard(self, step: int) -> None:
        await self._send(step=step, discard=True)

    async def done(self) -> None:
        """End the answer (again: nothing); the executor calls it whatever the outcome."""
        if not self.finished:
            await self._send(done=True)
            self.finished = True

    async def _send(
        self, *, delta: str = "", step: int = 1, done: bool = False, discard: bool = False
    ) -> None:
        if self.finished:
            return
        chunk = TaskStreamChunk(
            task_id=self._task.task_id,
            index=self._index,
            delta=delta,
            step=step,
            done=done,
            discard=discard,
            attempt=self._task.attempt,
        )
        self._index += 1
        try:
            await self._outbox.core(self._subject, chunk.to_json(), _JSON)
        except Exception as exc:  # best effort: the answer itself is in the result
            CHUNKS_LOST.inc()
            log.warning("stream chunk not published: %r", exc, extra={"task_id": self._task.task_id})
            return
        CHUNKS.inc()
