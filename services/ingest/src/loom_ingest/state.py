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
from .normalise import Normaliser
from .publish import Admission


@dataclass
class State:
    """``js`` is set once NATS is connected, ``pool`` once the database is open and migrated;
    ``admission`` bounds the HTTP ingest requests publishing at once; ``normaliser`` turns OTLP
    spans into events (pricing LLM calls with the price table)."""

    settings: Settings
    broker: NatsBroker
    health: DatabaseHealth = field(default_factory=DatabaseHealth)
    js: JetStreamContext | None = None
    pool: asyncpg.Pool | None = None
    admission: Admission = field(default_factory=lambda: Admission(32))
    normaliser: Normaliser = field(default_factory=Normaliser)


async def get_state(conn: HTTPConnection) -> State:
    return cast(State, conn.app.state.loom)


StateDep = Annotated[State, Depends(get_state)]
