"""What the running dispatcher holds, reached from HTTP handlers as ``state: StateDep``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends
from faststream.nats import NatsBroker
from loom_nats import latest_values
from loom_protocol.auth import API_KEYS_BUCKET, KeyRing
from nats.js.kv import KeyValue
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from .bus import NatsOutbox
from .config import Settings
from .dispatching import Dispatcher
from .key_bucket import open_key_bucket
from .rate_limit import SubmitRateLimit
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
    keys: KeyRing = field(default_factory=KeyRing)  # the API keys this dispatcher accepts
    submits: SubmitRateLimit = field(default_factory=lambda: SubmitRateLimit(0.0, 1))  # per key
    _key_bucket: KeyValue | None = None

    async def key_bucket(self) -> KeyValue:
        """The ``LOOM_API_KEYS`` bucket, created where missing on first use."""
        if self._key_bucket is None:
            js = self.broker.connection.jetstream()
            self._key_bucket = await open_key_bucket(js, self.settings.nats_replicas)
        return self._key_bucket

    async def stored_keys(self) -> Mapping[str, bytes]:
        """What the ``LOOM_API_KEYS`` bucket holds now (SHA-256 → record), created where missing."""
        await self.key_bucket()
        return await latest_values(self.broker.connection.jetstream(), API_KEYS_BUCKET)


async def get_state(conn: HTTPConnection) -> State:
    return cast(State, conn.app.state.loom)


StateDep = Annotated[State, Depends(get_state)]
