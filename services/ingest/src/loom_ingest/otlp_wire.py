"""OTLP/HTTP trace bodies in and answers out: pure functions over ``opentelemetry-proto``.

A request body (``application/x-protobuf`` or ``application/json``, maybe gzip-compressed) becomes
an ``ExportTraceServiceRequest`` and then flat :class:`SpanRecord` values with plain Python
attribute maps, which the normaliser reads. OTLP/JSON differs from protobuf's JSON mapping in
its ids (hex, not base64), so those are converted before parsing; enums may be integers or names
and unknown fields are ignored, as the OTLP specification requires of receivers.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


class BadBody(ValueError):
    """The body cannot be read as an OTLP trace export (answered 400 with this reason)."""


class TooLarge(ValueError):
    """The body, once decompressed, is over the size limit (answered 413)."""


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """A span's event (OTLP ``Span.Event``): some instrumentations put messages there."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One finished span with its resource and scope, ids as lower-case hex."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: str = "UNSET"
    status_message: str = ""
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""
    scope_version: str = ""
    events: tuple[SpanEvent, ...] = ()


def media_type(content_type: str | None) -> str:
    """The body's media type (``application/x-protobuf`` when none is given, as OTLP/HTTP's default)."""
    kind = (content_type or PROTOBUF).split(";", 1)[0].strip().lower()
    return kind or PROTOBUF


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` decoded from its ``Content-Encoding`` (identity or gzip), never more than ``limit`` bytes."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        if len(body) > limit:
            raise TooLarge(f"body is {len(body)} bytes, over the limit of {limit} bytes")
        return body
    if name not in ("gzip", "x-gzip"):
        raise BadBody(f"content encoding {name!r} is not supported (use gzip or none)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise TooLarge(f"body decompresses to more than the limit of {limit} bytes")
        out += inflater.flush()
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise BadBody(f"body is not valid gzip: {exc}") from exc
    if len(out) > limit:
        raise TooLarge(f"body decompresses to more than the limit of {limit} bytes")
    if not inflater.eof:
        raise BadBody("body is not valid gzip: the stream is truncated")
    return out


def parse_request(body: bytes, kind: str) -> ExportTraceServiceRequest:
    """An export request from a protobuf or OTLP/JSON body."""
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise BadBody(f"body is not a protobuf ExportTraceServiceRequest: {exc}") from exc
        return request
    if kind != JSON:
        raise BadBody(f"content type {kind!r} is not supported (use {PROTOBUF} or {JSON})")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadBody("body must be a JSON object (an ExportTraceServiceRequest)")
    try:
        json_format.ParseDict(_ids_to_base64(document), request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise BadBody(f"body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from exc
    return request


def _ids_to_base64(value: Any) -> Any:
    """OTLP/JSON's hex ids rewritten as protobuf JSON's base64 (everything else unchanged)."""
    if isinstance(value, list):
        return [_ids_to_base64(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in _ID_FIELDS and isinstance(item, str):
            try:
                out[key] = base64.b64encode(bytes.fromhex(item)).decode("ascii")
            except ValueError as exc:
                raise BadBody(f"{key} {item[:40]!r} is not hex") from exc
        else:
            out[key] = _ids_to_base64(item)
    return out


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a JSON-friendly Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, which)


def attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def _hex(raw: bytes) -> str | None:
    return binascii.hexlify(raw).decode("ascii") if raw else None


def spans_of(request: ExportTraceServiceRequest) -> Iterator[SpanRecord | str]:
    """Each span of the request as a record, or the reason it cannot be one (bad ids)."""
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                trace_id, span_id = _hex(span.trace_id), _hex(span.span_id)
                if trace_id is None or len(trace_id) != 32 or trace_id == "0" * 32:
                    yield f"span {span.name[:80]!r}: trace id must be 16 bytes, not all zero"
                    continue
                if span_id is None or len(span_id) != 16 or span_id == "0" * 16:
                    yield f"span {span.name[:80]!r}: span id must be 8 bytes, not all zero"
                    continue
                parent = _hex(span.parent_span_id)
                yield SpanRecord(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=parent if parent and parent != "0" * 16 else None,
                    name=span.name,
                    kind=_SPAN_KINDS.get(span.kind, "UNSPECIFIED"),
                    start_ns=span.start_time_unix_nano,
                    end_ns=max(span.end_time_unix_nano, span.start_time_unix_nano),
                    attributes=attributes(span.attributes),
                    status_code=_STATUS_CODES.get(span.status.code, "UNSET"),
                    status_message=span.status.message,
                    resource=resource,
                    scope=scope.name,
                    scope_version=scope.version,
                    events=tuple(
                        SpanEvent(e.name, e.time_unix_nano, attributes(e.attributes)) for e in span.events
                    ),
                )


def export_response(kind: str, rejected: int = 0, message: str = "") -> bytes:
    """The ``ExportTraceServiceResponse`` body, with a partial success when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return _encode(response, kind)


def status_body(kind: str, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` body, as OTLP/HTTP answers a failed request."""
    return _encode(status_pb2.Status(code=code, message=message), kind)


def _encode(message: Any, kind: str) -> bytes:
    if kind == JSON:
        return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode("utf-8")
    return bytes(message.SerializeToString())
