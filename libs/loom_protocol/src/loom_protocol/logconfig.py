"""How every Loom service logs and when it traces, as plain data.

:func:`logging_config` is the log line every service writes, as a
:func:`logging.config.dictConfig` dictionary; :func:`tracing_enabled` says from the standard
``OTEL_*`` environment whether a service exports traces at all, and :func:`otel_environment`
completes that environment for OpenTelemetry's auto-instrumentation.

One JSON object per line on standard output, whichever library made the record (the service's
own modules, uvicorn, FastStream, nats-py, asyncio)::

    {"time": "2026-11-29T18:00:00.123456+00:00", "level": "INFO", "logger": "loom_dispatcher.api",
     "message": "...", "task_id": "...", "trace_id": "...", "span_id": "...", "exc_info": "..."}

``task_id`` comes from the record's ``extra`` or else from :data:`current_task_id`;
``trace_id``/``span_id`` from the attributes OpenTelemetry's logging instrumentation puts on
records (``otelTraceID``/``otelSpanID``) while a span is recording; ``exc_info`` is the
rendered traceback. Other ``extra`` keys are written as fields too.

The formatter is ``python-json-logger``'s, named by its import path: this module imports
nothing but the standard library, and a service that applies the dictionary depends on
``python-json-logger``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, TypedDict

__all__ = [
    "BrokerLogging",
    "DeniedHandshakeFilter",
    "LogContextFilter",
    "broker_logging",
    "current_task_id",
    "logging_config",
    "mark_websocket_denied",
    "otel_environment",
    "tracing_enabled",
]

current_task_id: ContextVar[str | None] = ContextVar("loom_current_task_id", default=None)
"""The task being worked on in this context; set it where a task's handling starts."""

_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_OTEL_TRACE, _OTEL_SPAN = "otelTraceID", "otelSpanID"
# uvicorn repeats its message with ANSI colours in ``color_message``; the others say nothing new
_DROPPED = ("otelServiceName", "otelTraceSampled", "color_message")
_NO_TRACE = "0"


class LogContextFilter(logging.Filter):
    """Puts the task id and the trace ids on a record under Loom's field names.

    It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if fields.get("task_id") is None and (task_id := current_task_id.get()) is not None:
            fields["task_id"] = task_id
        trace_id, span_id = fields.pop(_OTEL_TRACE, _NO_TRACE), fields.pop(_OTEL_SPAN, _NO_TRACE)
        for name in _DROPPED:
            fields.pop(name, None)
        if trace_id != _NO_TRACE:
            fields.setdefault("trace_id", trace_id)
            fields.setdefault("span_id", span_id)
        return True


_websocket_denied: ContextVar[bool] = ContextVar("loom_websocket_denied", default=False)
# what uvicorn's websockets-sansio protocol logs when an application answers a handshake with an
# HTTP response (the ASGI denial extension) and returns: it sends the response but never counts the
# handshake as complete (Kludex/uvicorn#3138)
_INCOMPLETE_HANDSHAKE = "ASGI callable returned without completing handshake."


def mark_websocket_denied() -> None:
    """Say that this connection's handshake was answered with an HTTP response on purpose (a
    401, a 403, a 404): uvicorn's error about an incomplete handshake is then not logged for it.
    Call it in the task that serves the connection, before sending the denial."""
    _websocket_denied.set(True)


class DeniedHandshakeFilter(logging.Filter):
    """Drops uvicorn's "without completing handshake" error for a handshake that was denied on
    purpose (:func:`mark_websocket_denied`); the same error for any other connection stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == _INCOMPLETE_HANDSHAKE and _websocket_denied.get())


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """The dictConfig of a Loom service: every record as one JSON line on standard output.

    Args:
        level: The root level (``DEBUG``, ``INFO``, ...), case-insensitive.

    Returns:
        A dictionary for :func:`logging.config.dictConfig` (or uvicorn's ``log_config``).
        uvicorn's access log is off; uvicorn's and FastStream's loggers propagate to the
        root's JSON handler instead of writing their own (coloured) text.
    """
    level = level.upper()
    # loggers that libraries give handlers and levels of their own: take those away (the root's
    # level applies), let records propagate
    library_loggers = ("uvicorn", "uvicorn.error", "faststream", "faststream.access")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": f"{__name__}.LogContextFilter"},
            "denied_handshake": {"()": f"{__name__}.DeniedHandshakeFilter"},
        },
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(levelname)s %(name)s %(message)s",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",
            }
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                "filters": ["context"],
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            **{name: {"level": "NOTSET", "handlers": [], "propagate": True} for name in library_loggers},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            # a filter on the logger: it sees the records logged there, before they propagate
            "uvicorn.error": {
                "level": "NOTSET",
                "handlers": [],
                "propagate": True,
                "filters": ["denied_handshake"],
            },
        },
    }


class BrokerLogging(TypedDict):
    """How a FastStream broker logs: the keyword arguments of its constructor."""

    logger: logging.Logger
    log_level: int


def broker_logging() -> BrokerLogging:
    """The logging of a Loom service's FastStream broker: ``NatsBroker(url, **broker_logging())``.

    FastStream logs through the ``faststream`` logger, which :func:`logging_config` sends to
    the root's JSON handler (left to itself FastStream writes coloured text of its own), and
    its per-message records are DEBUG, off the hot path at the usual INFO level.
    """
    return {"logger": logging.getLogger("faststream"), "log_level": logging.DEBUG}


def tracing_enabled(environ: Mapping[str, str]) -> bool:
    """Whether a service sets up OpenTelemetry tracing at all.

    Tracing is on when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and ``OTEL_SDK_DISABLED`` is not ``true``; off, a
    service installs no SDK, no instrumentation and no per-message propagation. Everything
    else (service name, sampler, batching, headers) is read from the standard variables by the
    OpenTelemetry SDK itself.

    Args:
        environ: The process environment (``os.environ``) or any mapping like it.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name) for name in _OTLP_ENDPOINTS)


# What Loom's services need from OpenTelemetry's distro when nothing else is said: traces only,
# over OTLP/HTTP (the exporter the services install), no health/metrics endpoint spans, trace
# ids on log records but no OpenTelemetry log handler (the JSON lines above are the logs).
_OTEL_DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz,readyz,metrics",
    "OTEL_PYTHON_LOG_CORRELATION": "true",
    "OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION": "false",
}


def otel_environment(environ: Mapping[str, str], service_name: str) -> dict[str, str] | None:
    """The environment OpenTelemetry's auto-instrumentation should start from, or None when off.

    None unless :func:`tracing_enabled`; otherwise ``environ`` completed with Loom's defaults
    (``OTEL_SERVICE_NAME`` = ``service_name``, traces over OTLP/HTTP, no metrics or logs
    exporters, ``/healthz``, ``/readyz`` and ``/metrics`` not traced, trace ids on log
    records). A variable already set in ``environ`` wins over its default.

    Args:
        environ: The process environment (``os.environ``) or any mapping like it.
        service_name: The default ``service.name`` (``loom-dispatcher``, ...).
    """
    if not tracing_enabled(environ):
        return None
    return {**_OTEL_DEFAULTS, "OTEL_SERVICE_NAME": service_name, **environ}
