"""``POST /v1/traces``: the OTLP/HTTP trace receiver.

Bodies are ``application/x-protobuf`` or ``application/json`` (OTLP/JSON), optionally gzip. The
spans are normalised into Loom events (normalise.py) and published like every event. Answers,
per the OTLP/HTTP specification, in the request's encoding:

* 200 with an ``ExportTraceServiceResponse``; when some spans could not be made events, its
  ``partial_success`` holds how many were rejected and why (they are not retried by clients);
* 400 with a ``google.rpc.Status`` for a body that cannot be read (bad gzip, bad protobuf/JSON),
  413 for a body over ``LOOM_HTTP_MAX_BODY_BYTES``, 415 for another content type;
* 429 (too many requests publishing at once) or 503 (NATS not connected, or JetStream did not
  store every event in time) with ``Retry-After``: the client sends the same export again, and
  the events' fixed ids make the copy harmless.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from loom_protocol import CloudEvent

from . import metrics
from .body import BodyTooLarge, read_limited
from .otlp_wire import (
    JSON,
    PROTOBUF,
    BadBody,
    SpanRecord,
    TooLarge,
    decompress,
    export_response,
    media_type,
    parse_request,
    spans_of,
    status_body,
)
from .publish import prepare, publish_all
from .state import StateDep

log = logging.getLogger(__name__)
router = APIRouter()
# google.rpc.Code values for the Status body of a failed export
_INVALID_ARGUMENT, _RESOURCE_EXHAUSTED, _UNAVAILABLE = 3, 8, 14
_MAX_REASONS = 5


def _answer(kind: str, status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    metrics.HTTP_REQUESTS.labels("/v1/traces", str(status)).inc()
    return Response(body, status, headers=headers, media_type=kind)


def _failed(kind: str, status: int, code: int, message: str, retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return _answer(kind, status, status_body(kind, code, message), headers)


def _shrunk(event: CloudEvent) -> CloudEvent:
    """The event without the span's raw attributes (kept when they fit)."""
    data = dict(event.data) if isinstance(event.data, dict) else {}
    otel = dict(data.get("otel") or {})
    otel.pop("attributes", None)
    otel["attributes_dropped"] = True
    data["otel"] = otel
    return event.model_copy(update={"data": data})


def _checked(events: list[CloudEvent], max_bytes: int) -> list[tuple[CloudEvent, str, bytes]] | str:
    out = []
    for event in events:
        ready = prepare(event, max_bytes)
        if isinstance(ready, str) and "bytes, over the limit" in ready:
            ready = prepare(_shrunk(event), max_bytes)
        if isinstance(ready, str):
            return ready
        out.append(ready)
    return out


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export (protobuf or JSON, gzip accepted)",
    responses={400: {}, 413: {}, 415: {}, 429: {}, 503: {}},
)
async def export_traces(request: Request, state: StateDep) -> Response:
    settings = state.settings
    kind = media_type(request.headers.get("content-type"))
    answer_kind = JSON if kind == JSON else PROTOBUF
    if kind not in (JSON, PROTOBUF):
        return _failed(
            answer_kind,
            415,
            _INVALID_ARGUMENT,
            f"content type {kind!r} is not supported; use {PROTOBUF} or {JSON}",
        )
    try:
        body = await read_limited(request, settings.http_max_body_bytes)
        body = decompress(body, request.headers.get("content-encoding"), settings.http_max_body_bytes)
        export = parse_request(body, kind)
    except (BodyTooLarge, TooLarge) as exc:
        return _failed(answer_kind, 413, _RESOURCE_EXHAUSTED, str(exc))
    except BadBody as exc:
        return _failed(answer_kind, 400, _INVALID_ARGUMENT, str(exc))

    reasons: list[str] = []
    records: list[SpanRecord] = []
    for item in spans_of(export):
        if isinstance(item, str):
            reasons.append(item)
        else:
            records.append(item)
    ready: list[tuple[CloudEvent, str, bytes]] = []
    accepted = 0
    for span, made in zip(records, state.normaliser.events_of(records), strict=True):
        checked = _checked(made, settings.max_event_bytes) if not isinstance(made, str) else made
        if isinstance(checked, str):
            reasons.append(checked if checked.startswith("span ") else f"span {span.span_id}: {checked}")
        else:
            ready.extend(checked)
            accepted += 1
    rejected = len(reasons)

    if ready:
        if state.js is None:
            return _failed(answer_kind, 503, _UNAVAILABLE, "ingest is not connected to NATS yet", 2)
        if not state.admission.enter():
            return _failed(
                answer_kind,
                429,
                _UNAVAILABLE,
                "ingest is busy; send again later",
                settings.http_retry_after_s,
            )
        try:
            outcome = await publish_all(state.js, ready, settings.http_publish_timeout_s)
        finally:
            state.admission.leave()
        failures = [reason for reason in outcome if reason is not None]
        if failures:
            log.warning(
                "OTLP export not stored (%d of %d events): %s", len(failures), len(ready), failures[0]
            )
            return _failed(
                answer_kind,
                503,
                _UNAVAILABLE,
                f"{len(failures)} of {len(ready)} events not stored ({failures[0]}); send the export again",
                settings.http_retry_after_s,
            )
    metrics.OTLP_SPANS.labels("accepted").inc(accepted)
    metrics.OTLP_SPANS.labels("rejected").inc(rejected)
    message = "; ".join(reasons[:_MAX_REASONS]) + ("; ..." if len(reasons) > _MAX_REASONS else "")
    return _answer(answer_kind, 200, export_response(answer_kind, rejected, message))
