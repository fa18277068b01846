"""Loom's Python client: the SDK (blocking :class:`LoomClient`, asyncio :class:`AsyncLoomClient`)
and the ``loom`` command line (:mod:`loom_client.cli`).

Modules:

* :mod:`loom_client.settings` -- where the services are (``LOOM_*`` settings).
* :mod:`loom_client.errors` -- :class:`LoomError` and its subclasses.
* :mod:`loom_client.client`, :mod:`loom_client.aio` -- the two clients.
* :mod:`loom_client.calls` -- every HTTP call, described without I/O (shared by both clients).
* :mod:`loom_client.models` -- the query, registry and replay answers.
* :mod:`loom_client.streaming` -- a task's answer stream (SSE); :mod:`loom_client.live` the live feed.
* :mod:`loom_client.trace` -- a task's trace as a tree of steps.
* :mod:`loom_client.nats_submit` -- submitting over NATS JetStream.
"""

from loom_protocol import (
    ApiKeyRecord,
    CloudEvent,
    CreatedApiKey,
    Scope,
    Task,
    TaskStatus,
    TaskStreamChunk,
    TaskSubmission,
)

from .aio import AsyncLoomClient
from .client import LoomClient
from .errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    LoomError,
    NotFound,
    Timeout,
    Unauthorized,
    Unavailable,
)
from .live import AsyncLiveFeed, LiveFeed
from .models import (
    AgentInfo,
    Dropped,
    LiveMessage,
    ReplayFrame,
    ReplaySession,
    SessionDetail,
    StreamEnd,
    TaskDetail,
    TaskPage,
    TaskRecord,
    TaskSummary,
)
from .settings import ClientSettings
from .streaming import join_answer
from .trace import TraceNode, TraceStep

__version__ = "0.1.0"

__all__ = [
    "AgentInfo",
    "ApiKeyRecord",
    "AsyncLiveFeed",
    "AsyncLoomClient",
    "ClientSettings",
    "CloudEvent",
    "Conflict",
    "CreatedApiKey",
    "Dropped",
    "Forbidden",
    "InvalidRequest",
    "LiveFeed",
    "LiveMessage",
    "LoomClient",
    "LoomError",
    "NotFound",
    "ReplayFrame",
    "ReplaySession",
    "Scope",
    "SessionDetail",
    "StreamEnd",
    "Task",
    "TaskDetail",
    "TaskPage",
    "TaskRecord",
    "TaskStatus",
    "TaskStreamChunk",
    "TaskSubmission",
    "TaskSummary",
    "Timeout",
    "TraceNode",
    "TraceStep",
    "Unauthorized",
    "Unavailable",
    "join_answer",
]
