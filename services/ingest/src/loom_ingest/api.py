"""``WS /ws/ingest``: event batches from producers outside NATS (the protocol is in ws.py)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from . import ws
from .state import StateDep

router = APIRouter()


@router.websocket("/ws/ingest")
async def ingest_socket(websocket: WebSocket, state: StateDep) -> None:
    assert state.js is not None  # set in the lifespan, before the app serves
    await ws.serve(
        websocket,
        state.js,
        max_event_bytes=state.settings.max_event_bytes,
        max_events=state.settings.ws_max_batch_events,
        timeout_s=state.settings.ws_publish_timeout_s,
    )
