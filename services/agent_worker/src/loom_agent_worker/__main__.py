"""``python -m loom_agent_worker``: serve an agent worker on uvicorn (uvloop where installed).

A worker that cannot load its agents (``LOOM_WORKER_AGENTS``, see ``loading.py``) or whose
settings are invalid prints one line on stderr and exits with status 2, without a traceback.
"""

import logging.config
import os
import sys
from typing import NoReturn

import uvicorn
from loom_protocol.collector import tune_collector
from loom_protocol.logconfig import logging_config as log_config
from loom_protocol.logconfig import otel_environment
from opentelemetry.instrumentation.auto_instrumentation import initialize
from pydantic import ValidationError

from .config import Settings


def _refuse(reason: str) -> NoReturn:
    sys.stderr.write(f"loom-agent-worker: cannot start: {reason}\n")
    sys.exit(2)


try:
    s = Settings()
except ValidationError as exc:
    error = exc.errors()[0]
    _refuse(f"invalid setting LOOM_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']}")
if otel := otel_environment(os.environ, "loom-agent-worker"):
    os.environ.update(otel)
    initialize()

from .app import create_app  # noqa: E402 (after OpenTelemetry's auto-instrumentation patched its imports)
from .loading import AgentLoadError  # noqa: E402

logging.config.dictConfig(log_config(s.log_level))  # loading agents may log already
try:
    app = create_app(s)
except AgentLoadError as exc:
    _refuse(str(exc))
tune_collector(s.gc_threshold)  # once start-up imports are done
uvicorn.run(app, host=s.http_host, port=s.http_port, log_config=log_config(s.log_level))
