"""What the running dispatcher holds, opened in the lifespan and reached from HTTP handlers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from faststream.nats import NatsBroker
from redis.asyncio import Redis

from .bus import NatsOutbox
from .config import Settings
from .dispatching import Dispatcher
from .store import TaskStore


@dataclass
class State:
    settings: Settings
    broker: NatsBroker
    redis: Redis
    store: TaskStore
    dispatcher: Dispatcher
    outbox: NatsOutbox


def get_state(request: Request) -> State:
    state: State = request.app.state.loom
    return state
