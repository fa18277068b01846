"""``WS /ws/ingest``: event batches from producers outside NATS (an SDK-side interceptor, a log shipper).

A frame ``{"type": "event_batch", "events": [...]}`` is answered with an
:class:`~loom_protocol.EventBatchAck`: each event is validated on its own, the valid ones are
published to JetStream (``loom.event.ingest.<type>``, ``Nats-Msg-Id`` = the event id) and counted as
accepted once JetStream acknowledged them; the others are listed with their index and reason.
A frame that is not such a batch gets ``{"type": "error", "reason": ...}``; the socket stays
open either way. An event with a NUL character or a lone surrogate in any string, a number that
is not finite, or nesting deeper than :data:`~loom_protocol.limits.MAX_JSON_DEPTH` is refused
with the reason (nothing downstream could store it); a frame nested too deep to parse is an
error frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from fastapi import WebSocket, WebSocketDisconnect
from loom_protocol import MSG_ID_HEADER, BatchError, CloudEvent, EventBatchAck, validation_reason
from loom_protocol.limits import check_json_value
from pydantic import ValidationError

from . import metrics
from .publish import prepare

log = logging.getLogger(__name__)
_HEADERS = {"content-type": "application/cloudevents+json"}


class Publisher(Protocol):
    async def publish_async(
        self,
        subject: str,
        payload: bytes = b"",
        wait_stall: float | None = None,
        stream: str | None = None,
        headers: dict[Any, Any] | None = None,
    ) -> asyncio.Future[Any]: ...


def error_frame(reason: str) -> dict[str, str]:
    return {"type": "error", "reason": reason}


def check_event(raw: Any, max_bytes: int) -> tuple[CloudEvent, str, bytes] | str:
    """A valid event with its subject and wire form, or the reason it is refused."""
    if not isinstance(raw, dict):
        return f"an event must be a JSON object, got {_kind(raw)}"
    if (problem := check_json_value(raw)) is not None:
        return f"not storable: {problem}"
    try:
        event = CloudEvent.model_validate(raw)
    except ValidationError as exc:
        return f"not a valid CloudEvent: {validation_reason(exc)}"
    return prepare(event, max_bytes)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


async def handle_frame(
    text: str, js: Publisher, *, max_event_bytes: int, max_events: int, timeout_s: float
) -> dict[str, Any]:
    try:
        frame = json.loads(text)
    except ValueError as exc:
        return error_frame(f"frame is not valid JSON: {exc}")
    except RecursionError:
        return error_frame("frame is nested too deep to parse")
    if not isinstance(frame, dict):
        return error_frame(f"frame must be a JSON object, got {_kind(frame)}")
    if frame.get("type") != "event_batch":
        return error_frame(f"frame type must be 'event_batch', got {frame.get('type')!r}")
    events = frame.get("events")
    if not isinstance(events, list):
        return error_frame(f"'events' must be an array of events, got {_kind(events)}")
    if len(events) > max_events:
        return error_frame(f"a batch holds at most {max_events} events, this one has {len(events)}")

    errors: list[BatchError] = []
    pending: list[tuple[int, asyncio.Future[Any]]] = []
    for index, raw in enumerate(events):
        checked = check_event(raw, max_event_bytes)
        if isinstance(checked, str):
            errors.append(BatchError(index=index, reason=checked))
            continue
        event, subject, body = checked
        try:
            future = await js.publish_async(subject, body, headers={**_HEADERS, MSG_ID_HEADER: event.id})
        except Exception as exc:
            errors.append(BatchError(index=index, reason=f"not stored: publishing failed: {exc!r}"))
            continue
        pending.append((index, future))
    if pending:
        done, not_done = await asyncio.wait([f for _, f in pending], timeout=timeout_s)
        for future in not_done:
            future.cancel()
        for index, future in pending:
            if future in not_done:
                errors.append(
                    BatchError(
                        index=index, reason=f"not stored: JetStream did not acknowledge within {timeout_s:g}s"
                    )
                )
            elif future.exception() is not None:
                errors.append(BatchError(index=index, reason=f"not stored: {future.exception()!r}"))
    errors.sort(key=lambda e: e.index)
    accepted = len(events) - len(errors)
    metrics.WS_EVENTS.labels("accepted").inc(accepted)
    metrics.WS_EVENTS.labels("rejected").inc(len(errors))
    return EventBatchAck(accepted=accepted, rejected=len(errors), errors=errors).to_wire()


async def serve(
    ws: WebSocket, js: Publisher, *, max_event_bytes: int, max_events: int, timeout_s: float
) -> None:
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                try:
                    text = (message.get("bytes") or b"").decode("utf-8")
                except UnicodeDecodeError:
                    metrics.WS_FRAMES.labels("error").inc()
                    await ws.send_text(json.dumps(error_frame("binary frame is not UTF-8 JSON")))
                    continue
            try:
                answer = await handle_frame(
                    text, js, max_event_bytes=max_event_bytes, max_events=max_events, timeout_s=timeout_s
                )
            except Exception:  # one bad frame never closes the socket
                log.exception("a /ws/ingest frame could not be handled")
                answer = error_frame("the frame could not be handled; the service logged why")
            metrics.WS_FRAMES.labels("error" if answer["type"] == "error" else "batch").inc()
            await ws.send_text(json.dumps(answer))
    except WebSocketDisconnect:
        return
