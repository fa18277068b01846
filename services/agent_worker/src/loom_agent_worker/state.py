"""What the running worker holds, reached from HTTP handlers as ``state: StateDep``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends
from faststream.nats import NatsBroker
from starlette.requests import HTTPConnection

from .execution import Executor


@dataclass
class State:
    broker: NatsBroker
    executor: Executor


async def get_state(conn: HTTPConnection) -> State:
    return cast(State, conn.app.state.loom)


StateDep = Annotated[State, Depends(get_state)]
