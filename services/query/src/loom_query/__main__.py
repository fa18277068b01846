"""``python -m loom_query``: serve the query service on uvicorn (uvloop where installed)."""

import os

import uvicorn
from loom_protocol.collector import tune_collector
from loom_protocol.logconfig import logging_config as log_config
from loom_protocol.logconfig import otel_environment
from opentelemetry.instrumentation.auto_instrumentation import initialize

from .config import Settings

s = Settings()
if otel := otel_environment(os.environ, "loom-query"):
    os.environ.update(otel)
    initialize()

from .app import create_app  # noqa: E402 (after OpenTelemetry's auto-instrumentation patched its imports)

tune_collector(s.gc_threshold)  # once start-up imports are done
uvicorn.run(create_app, factory=True, host=s.http_host, port=s.http_port, log_config=log_config(s.log_level))
