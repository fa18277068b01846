"""Publishing checked events to JetStream for the HTTP ingest endpoints, with admission control.

Each event goes to ``loom.event.ingest.<type>`` with ``Nats-Msg-Id`` = its id (JetStream keeps one copy
of a resent event); acknowledgements are awaited together, with one deadline. :class:`Admission`
bounds the requests being published at once, so a flood is answered 429 at the door instead of
queueing without end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loom_protocol import MSG_ID_HEADER, CloudEvent, subjects

from .rows import attribute_problem

if TYPE_CHECKING:  # ws checks its events with prepare, below
    from .ws import Publisher

_HEADERS = {"content-type": "application/cloudevents+json"}


class Admission:
    """At most ``limit`` requests publishing at once; the others are turned away (not queued)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    def enter(self) -> bool:
        if self.busy >= self.limit:
            return False
        self.busy += 1
        return True

    def leave(self) -> None:
        self.busy = max(self.busy - 1, 0)


async def publish_all(
    js: Publisher, items: Sequence[tuple[CloudEvent, str, bytes]], timeout_s: float
) -> list[str | None]:
    """Publish ``(event, subject, body)`` items; for each, None once JetStream stored it, else why not."""
    outcome: list[str | None] = [None] * len(items)
    pending: list[tuple[int, asyncio.Future[Any]]] = []
    for index, (event, subject, body) in enumerate(items):
        try:
            future = await js.publish_async(subject, body, headers={**_HEADERS, MSG_ID_HEADER: event.id})
        except Exception as exc:
            outcome[index] = f"publishing failed: {exc!r}"
            continue
        pending.append((index, future))
    if pending:
        _, not_done = await asyncio.wait([f for _, f in pending], timeout=timeout_s)
        for index, future in pending:
            if future in not_done:
                future.cancel()
                outcome[index] = f"JetStream did not acknowledge within {timeout_s:g}s"
            elif future.exception() is not None:
                outcome[index] = f"JetStream refused it: {future.exception()!r}"
    return outcome


def prepare(event: CloudEvent, max_bytes: int) -> tuple[CloudEvent, str, bytes] | str:
    """A built event with its subject and wire form, or why it cannot be stored (as ``/ws/ingest`` checks)."""
    try:
        subject = subjects.service_event("ingest", event.type)
    except ValueError as exc:
        return f"type {event.type[:80]!r} cannot be a subject: {exc}"
    if (problem := attribute_problem(event)) is not None:
        return problem
    body = event.to_json()
    if len(body) > max_bytes:
        return f"event is {len(body)} bytes, over the limit of {max_bytes} bytes"
    return event, subject, body
