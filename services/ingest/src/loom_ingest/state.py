"""What the running ingest service holds, reached from HTTP handlers as ``state: StateDep``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, cast

import asyncpg
from fastapi import Depends
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from starlette.requests import HTTPConnection

from .config import Settings
from .health import DatabaseHealth


@dataclass
class State:
    """``js`` is set once NATS is connected, ``pool`` once the database is open and migrated."""

    settings: Settings
    broker: NatsBroker
    health: DatabaseHealth = field(default_factory=DatabaseHealth)
    js: JetStreamContext | None = None
    pool: asyncpg.Pool | None = None


def get_state(conn: HTTPConnection) -> State:
    return cast(State, conn.app.state.loom)


StateDep = Annotated[State, Depends(get_state)]
