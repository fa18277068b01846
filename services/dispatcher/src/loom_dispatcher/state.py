"""What the running dispatcher holds, reached from HTTP handlers as ``state: StateDep``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends
from faststream.nats import NatsBroker
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from .bus import NatsOutbox
from .config import Settings
from .dispatching import Dispatcher
from .store import TaskStore
from .streaming import AnswerTail


@dataclass
class State:
    settings: Settings
    broker: NatsBroker
    redis: Redis
    store: TaskStore
    dispatcher: Dispatcher
    outbox: NatsOutbox
    answers: AnswerTail = field(default_factory=AnswerTail)  # chunks of streaming tasks


def get_state(conn: HTTPConnection) -> State:
    return cast(State, conn.app.state.loom)


StateDep = Annotated[State, Depends(get_state)]
