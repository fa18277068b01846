"""What the running registry holds, reached from HTTP handlers as ``state: StateDep``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends
from faststream.nats import NatsBroker
from starlette.requests import HTTPConnection

from .membership import Membership
from .picks import PickServer


@dataclass
class State:
    broker: NatsBroker
    membership: Membership
    picks: PickServer


async def get_state(conn: HTTPConnection) -> State:
    return cast(State, conn.app.state.loom)


StateDep = Annotated[State, Depends(get_state)]
