"""The shared log line, the tracing switch and the stream configuration helper."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import socket
from collections.abc import Iterator

import pytest
import uvicorn
from loom_protocol.http import AsgiReceive, AsgiScope, AsgiSend
from loom_protocol.jetstream import ALL_STREAMS, TASKS_STREAM, stream_config
from loom_protocol.logconfig import (
    current_task_id,
    logging_config,
    mark_websocket_denied,
    otel_environment,
    tracing_enabled,
)
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Logging configured by logging_config, its handler writing into a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logging.config.dictConfig(logging_config("info"))
    buffer = io.StringIO()
    for handler in root.handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buffer)
    yield buffer
    root.handlers[:], level = saved
    root.setLevel(level)


def _records(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_every_library_logs_one_json_object_per_line(lines: io.StringIO) -> None:
    logging.getLogger("loom_test").info("hello %s", "world", extra={"agent": "echo"})
    for name in ("uvicorn.error", "faststream", "faststream.access.nats", "nats.aio.client", "asyncio"):
        logging.getLogger(name).warning("from %s", name)
    logging.getLogger("uvicorn.error").info(
        "Started %d", 1, extra={"color_message": "Started \x1b[36m%d\x1b[0m"}
    )
    logging.getLogger("uvicorn.access").info("GET / 200")  # the access log is off
    records = _records(lines)
    assert [r["logger"] for r in records] == [
        "loom_test",
        "uvicorn.error",
        "faststream",
        "faststream.access.nats",
        "nats.aio.client",
        "asyncio",
        "uvicorn.error",
    ]
    first = records[0]
    assert first["message"] == "hello world" and first["level"] == "INFO" and first["agent"] == "echo"
    assert str(first["time"]).endswith("+00:00")
    assert "\x1b[" not in lines.getvalue()


def test_task_id_from_context_or_extra_and_traceback_rendered(lines: io.StringIO) -> None:
    log = logging.getLogger("loom_test")
    token = current_task_id.set("task-1")
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        log.info("explicit", extra={"task_id": "task-2"})
    finally:
        current_task_id.reset(token)
    log.info("outside")
    failed, explicit, outside = _records(lines)
    assert failed["task_id"] == "task-1" and "ValueError: boom" in str(failed["exc_info"])
    assert explicit["task_id"] == "task-2"
    assert "task_id" not in outside


def test_trace_ids_only_while_a_span_records(lines: io.StringIO) -> None:
    log = logging.getLogger("loom_test")
    log.info("traced", extra={"otelTraceID": "ab" * 16, "otelSpanID": "cd" * 8, "otelServiceName": "x"})
    log.info("untraced", extra={"otelTraceID": "0", "otelSpanID": "0", "otelTraceSampled": False})
    traced, untraced = _records(lines)
    assert (traced["trace_id"], traced["span_id"]) == ("ab" * 16, "cd" * 8)
    assert not any(key.startswith("otel") for key in traced)
    assert "trace_id" not in untraced and not any(key.startswith("otel") for key in untraced)


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ],
)
def test_tracing_enabled_by_the_standard_variables(environ: dict[str, str], enabled: bool) -> None:
    assert tracing_enabled(environ) is enabled


def test_stream_config_is_the_jetstream_api_body() -> None:
    assert stream_config(TASKS_STREAM) == {
        "name": "LOOM_TASKS",
        "subjects": ["loom.task.>"],
        "retention": "limits",
        "storage": "file",
        "max_age": 7 * 86_400 * 10**9,
        "duplicate_window": 120 * 10**9,
        "max_msg_size": TASKS_STREAM.max_msg_size,
        "num_replicas": 1,
        "allow_direct": True,
    }
    assert stream_config(TASKS_STREAM, replicas=3)["num_replicas"] == 3
    for spec in ALL_STREAMS:
        assert json.loads(json.dumps(stream_config(spec)))["name"] == spec.name


def test_otel_environment_completes_what_is_set_and_is_none_when_off() -> None:
    assert otel_environment({}, "loom-query") is None
    env = otel_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SERVICE_NAME": "query-eu"},
        "loom-query",
    )
    assert env is not None
    assert env["OTEL_SERVICE_NAME"] == "query-eu"  # what is set wins
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_METRICS_EXPORTER"] == env["OTEL_LOGS_EXPORTER"] == "none"
    default = otel_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "loom-query")
    assert default is not None and default["OTEL_SERVICE_NAME"] == "loom-query"


@pytest.mark.parametrize("marked", [True, False])
async def test_a_websocket_denied_on_purpose_logs_no_incomplete_handshake_error(
    lines: io.StringIO, marked: bool
) -> None:
    """A real uvicorn (its default WebSocket protocol) and a real client: the denial reaches the
    client, and uvicorn's "without completing handshake" error is logged only for a handshake
    nobody said was denied on purpose."""

    async def app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        assert scope["type"] == "websocket"
        await receive()
        if marked:
            mark_websocket_denied()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"no"})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        with pytest.raises(InvalidStatus) as denied:
            async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5):
                pass
        assert denied.value.response.status_code == 401
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
    errors = [r["message"] for r in _records(lines) if r["level"] == "ERROR"]
    assert errors == ([] if marked else ["ASGI callable returned without completing handshake."])
