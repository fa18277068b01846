"""What the running replay service holds, reached from HTTP handlers as ``state: StateDep``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from .config import Settings
from .engine import ReplayEngine
from .runs import Runs
from .store import EventReader


@dataclass
class State:
    settings: Settings
    redis: Redis
    reader: EventReader
    engine: ReplayEngine
    runs: Runs


async def get_state(conn: HTTPConnection) -> State:
    return cast(State, conn.app.state.loom)


StateDep = Annotated[State, Depends(get_state)]
