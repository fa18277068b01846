"""The Celery baseline's app: a no-op task and a sleeping (I/O) task on a Redis broker and backend.

Both the worker (``celery -A loom_load.celery_app worker``, started by the harness) and the
client import this module; the broker URL and queue come from the environment the harness sets.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

BROKER_URL = os.environ.get("LOOM_LOAD_CELERY_URL", "redis://127.0.0.1:6379/5")
QUEUE = os.environ.get("LOOM_LOAD_CELERY_QUEUE", "loom-load")

app = Celery("loom_load", broker=BROKER_URL, backend=BROKER_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="loom_load.noop")  # type: ignore[untyped-decorator]
def noop(payload: Any) -> Any:
    """Return the payload: the same no-op as Loom's echo agent."""
    return payload


@app.task(name="loom_load.sleep_io")  # type: ignore[untyped-decorator]
def sleep_io(payload: Any) -> Any:
    """Sleep ``payload["delayS"]`` seconds, then return the payload: an I/O-bound task."""
    time.sleep(float(payload.get("delayS", 0.1)))
    return payload
