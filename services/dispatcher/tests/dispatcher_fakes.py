"""Recording fakes of the dispatcher's registry picker and NATS outbox, for its unit tests."""

from __future__ import annotations

from typing import Any

from loom_dispatcher.dispatching import Policy
from loom_protocol import PickReply, Task


class Picker:
    """Picks the instances given, in turn (the last one for ever)."""

    def __init__(self, *instances: str | None) -> None:
        self.instances = list(instances)

    async def pick(self, agent_id: str, task_id: str) -> PickReply:
        answer = self.instances.pop(0) if len(self.instances) > 1 else self.instances[0]
        return PickReply(agent_id=agent_id, instance_id=answer, reason=None if answer else "none")


class Outbox:
    """Records what the dispatcher publishes: (kind, task or reason, event data)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, dict[str, object] | None]] = []
        self.finals_refused = 0  # this many final statuses fail, as when the stream stores nothing

    async def assigned(self, task: Task) -> None:
        self.sent.append(("assigned", task, None))

    async def status(self, task: Task) -> None:
        self.sent.append(("status", task, None))

    async def final(self, task: Task) -> None:
        if self.finals_refused > 0:
            self.finals_refused -= 1
            raise TimeoutError("the stream stored nothing")
        self.sent.append(("final", task, None))

    async def dead(self, task: Task, reason: str) -> None:
        self.sent.append(("dead", reason, None))

    async def cancel(self, task: Task) -> None:
        self.sent.append(("cancel", task, None))

    async def superseded(self, task: Task) -> None:
        self.sent.append(("superseded", task, None))

    async def event(self, event_type: str, task: Task, data: dict[str, object] | None = None) -> None:
        self.sent.append((f"event:{event_type}", task, data))

    def assignments(self) -> list[Task]:
        return [t for kind, t, _ in self.sent if kind == "assigned"]

    def events(self, event_type: str) -> list[dict[str, object] | None]:
        return [data for kind, _, data in self.sent if kind == f"event:{event_type}"]

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.sent]


def policy(**changes: Any) -> Policy:
    values: dict[str, Any] = {
        "max_attempts": 3,
        "task_timeout_s": 60.0,
        "no_instance_timeout_s": 10.0,
        "retry_backoff_s": 0.0,
    }
    values.update(changes)
    return Policy(**values)
