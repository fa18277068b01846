"""``python -m loom_ingest``: serve the ingest service on uvicorn (uvloop where installed), on
``LOOM_HTTP_PORT`` and, when ``LOOM_OTLP_PORT`` is set (e.g. 4318), on that port as well."""

import os
import socket

import uvicorn
from loom_protocol.collector import tune_collector
from loom_protocol.logconfig import logging_config as log_config
from loom_protocol.logconfig import otel_environment
from opentelemetry.instrumentation.auto_instrumentation import initialize

from .config import Settings

s = Settings()
if otel := otel_environment(os.environ, "loom-ingest"):
    os.environ.update(otel)
    initialize()

from .app import create_app  # noqa: E402 (after OpenTelemetry's auto-instrumentation patched its imports)

tune_collector(s.gc_threshold)  # once start-up imports are done
config = uvicorn.Config(
    create_app,
    factory=True,
    host=s.http_host,
    port=s.http_port,
    log_config=log_config(s.log_level),
    ws_max_size=s.http_max_body_bytes,  # a /ws/ingest frame: no larger than an HTTP batch
)
if s.otlp_port is None or s.otlp_port == s.http_port:
    uvicorn.Server(config).run()
else:  # the same app on a second port too: OTLP/HTTP clients' conventional 4318
    sockets = []
    for port in (s.http_port, s.otlp_port):
        sock = socket.socket(socket.AF_INET6 if ":" in s.http_host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((s.http_host, port))
        sockets.append(sock)
    uvicorn.Server(config).run(sockets=sockets)
