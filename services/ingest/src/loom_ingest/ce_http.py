"""``POST /api/events``: the CloudEvents HTTP protocol binding.

Three modes, told apart by the request:

* structured: ``Content-Type: application/cloudevents+json``, the body is one event in the JSON format;
* batched: ``Content-Type: application/cloudevents-batch+json``, the body is a JSON array of events;
* binary: ``ce-specversion`` (and the other ``ce-*`` attributes) in headers, the body is the
  event's data, its media type the ``Content-Type`` (JSON media types become ``data``, text
  becomes a string, anything else ``data_base64``).

Each event is validated as ``/ws/ingest`` validates it and the answer is the same
:class:`~loom_protocol.EventBatchAck` (accepted, rejected, a reason per rejected index). A batch
is answered 200 with its ack; a single event (structured or binary) 200 when stored, 400 with
the ack when refused. A body that cannot be read is 400, over ``LOOM_HTTP_MAX_BODY_BYTES`` 413,
another content type 415; 429 or 503 with ``Retry-After`` when ingest cannot store the events
now (send again: the ids make a copy harmless).
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from loom_protocol import BatchError, EventBatchAck

from . import metrics
from .body import BodyTooLarge, read_limited
from .publish import publish_all
from .state import StateDep
from .ws import check_event

router = APIRouter()

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_ENDPOINT = "/api/events"


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    metrics.HTTP_REQUESTS.labels(_ENDPOINT, str(status)).inc()
    return JSONResponse(body, status, headers=headers)


def _problem(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return _answer(status, {"type": "error", "reason": reason}, headers)


def binary_event(headers: Any, body: bytes) -> dict[str, Any]:
    """The JSON-format event of a binary-mode request (``ce-*`` headers, body = data)."""
    event: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-") and len(lower) > 3:
            event[lower[3:]] = unquote(value)  # the binding percent-encodes header values
    content_type = headers.get("content-type")
    if content_type:
        event["datacontenttype"] = content_type
    if not body:
        return event
    media = _media_type(content_type)
    if media in ("", "application/json", "text/json") or media.endswith("+json"):
        try:
            event["data"] = json.loads(body)
        except ValueError as exc:
            raise ValueError(
                f"data is not valid JSON although its content type is {media or 'JSON'}"
            ) from exc
    elif media.startswith("text/"):
        try:
            event["data"] = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"data is not UTF-8 text although its content type is {media}") from exc
    else:
        event["data_base64"] = base64.b64encode(body).decode("ascii")
    return event


@router.post(
    _ENDPOINT,
    summary="CloudEvents over HTTP: structured, batched or binary mode",
    responses={400: {}, 413: {}, 415: {}, 429: {}, 503: {}},
)
async def post_events(request: Request, state: StateDep) -> JSONResponse:
    settings = state.settings
    media = _media_type(request.headers.get("content-type"))
    binary = "ce-specversion" in request.headers
    if not binary and media not in (STRUCTURED, BATCH):
        return _problem(
            415,
            f"content type {media or 'none'!r} is not a CloudEvents mode: send {STRUCTURED}, {BATCH}, "
            "or the event's data with ce-* headers (binary mode)",
        )
    try:
        body = await read_limited(request, settings.http_max_body_bytes)
    except BodyTooLarge as exc:
        return _problem(413, str(exc))

    raws: list[Any]
    if binary:
        try:
            raws = [binary_event(request.headers, body)]
        except ValueError as exc:
            return _problem(400, str(exc))
    else:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _problem(400, f"body is not valid JSON: {exc}")
        if media == BATCH:
            if not isinstance(document, list):
                return _problem(400, "a batch must be a JSON array of events")
            if len(document) > settings.ws_max_batch_events:
                return _problem(
                    413,
                    f"a batch holds at most {settings.ws_max_batch_events} events, "
                    f"this one has {len(document)}",
                )
            raws = document
        else:
            raws = [document]

    errors: list[BatchError] = []
    ready = []
    indexes = []
    for index, raw in enumerate(raws):
        checked = check_event(raw, settings.max_event_bytes)
        if isinstance(checked, str):
            errors.append(BatchError(index=index, reason=checked))
        else:
            ready.append(checked)
            indexes.append(index)
    if ready:
        retry = {"Retry-After": str(settings.http_retry_after_s)}
        if state.js is None:
            return _problem(503, "ingest is not connected to NATS yet", retry)
        if not state.admission.enter():
            return _problem(429, "ingest is busy; send again later", retry)
        try:
            outcome = await publish_all(state.js, ready, settings.http_publish_timeout_s)
        finally:
            state.admission.leave()
        failed = [
            BatchError(index=index, reason=f"not stored: {reason}")
            for index, reason in zip(indexes, outcome, strict=True)
            if reason is not None
        ]
        if failed:
            errors = sorted(errors + failed, key=lambda e: e.index)
            ack = EventBatchAck(accepted=len(raws) - len(errors), rejected=len(errors), errors=errors)
            return _answer(503, ack.to_wire(), retry)
    metrics.HTTP_EVENTS.labels("accepted").inc(len(raws) - len(errors))
    metrics.HTTP_EVENTS.labels("rejected").inc(len(errors))
    ack = EventBatchAck(accepted=len(raws) - len(errors), rejected=len(errors), errors=errors)
    single_refused = (binary or media != BATCH) and bool(errors)
    return _answer(400 if single_refused else 200, ack.to_wire())
