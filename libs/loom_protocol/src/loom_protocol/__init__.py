"""Loom's shared wire contract: pydantic models, subject names and stream definitions.

This package is the only code Loom's services share. It does no I/O and depends on pydantic
alone. Every public name is re-exported here; modules:

* :mod:`loom_protocol.base` -- :class:`LoomModel`, the base of every wire model.
* :mod:`loom_protocol.tasks` -- :class:`Task`, its state machine and lifecycle messages.
* :mod:`loom_protocol.agents` -- agent cards, heartbeats and registry messages.
* :mod:`loom_protocol.events` -- the CloudEvents 1.0 envelope and event types.
* :mod:`loom_protocol.payloads` -- the typed ``data`` of each event type (:func:`event_data`).
* :mod:`loom_protocol.replays` -- the replay recording, ``metadata.replay`` and the replay report.
* :mod:`loom_protocol.stored` -- the stored row type names and terminal event types.
* :mod:`loom_protocol.errors` -- :func:`validation_reason`.
* :mod:`loom_protocol.subjects` -- every NATS subject (import the module: ``subjects.task_status(...)``).
* :mod:`loom_protocol.jetstream` -- stream specs, the requests that create them and the ``Nats-Msg-Id`` rule.
* :mod:`loom_protocol.http` -- the error body and the ops endpoints' answers of every HTTP API.
* :mod:`loom_protocol.logconfig` -- the log line every service writes, and when it traces.
* :mod:`loom_protocol.settings` -- the settings every service reads (``LOOM_*``).
* :mod:`loom_protocol.memory` (memory entries), :mod:`loom_protocol.mcp` (tool calls).
* :mod:`loom_protocol.schema` -- JSON Schema export (``python -m loom_protocol.schema``).
"""

from loom_protocol import subjects
from loom_protocol._schema import WIRE_MODELS, json_schemas
from loom_protocol.agents import (
    UNKNOWN_AGENT_LABEL,
    AgentCapability,
    AgentCard,
    Heartbeat,
    InstanceLoad,
    KnownAgents,
    MemberChanged,
    MembershipChange,
    PickReply,
    PickRequest,
)
from loom_protocol.base import LoomModel
from loom_protocol.errors import validation_reason
from loom_protocol.events import (
    MAX_EVENT_BYTES,
    BatchError,
    CloudEvent,
    EventBatch,
    EventBatchAck,
    EventType,
    new_event,
)
from loom_protocol.http import ErrorBody, ErrorDetail, FieldError, Liveness, Readiness, error_code
from loom_protocol.jetstream import (
    ALL_STREAMS,
    EVENTS_STREAM,
    MSG_ID_HEADER,
    REGISTRY_STREAM,
    REJECTED_STREAM,
    TASKS_STREAM,
    StreamSpec,
    assigned_msg_id,
    cancel_msg_id,
    dead_msg_id,
    event_msg_id,
    member_msg_id,
    status_msg_id,
    stream_config,
    stream_create_error,
    stream_create_request,
    submitted_msg_id,
)
from loom_protocol.logconfig import (
    BrokerLogging,
    LogContextFilter,
    broker_logging,
    current_task_id,
    logging_config,
    otel_environment,
    tracing_enabled,
)
from loom_protocol.mcp import McpToolCall, McpToolDefinition, McpToolResult
from loom_protocol.memory import MemoryEntry, MemoryTier
from loom_protocol.payloads import (
    EVENT_PAYLOADS,
    AgentAction,
    AgentAnswer,
    AgentThought,
    ErrorReported,
    EventPayload,
    LlmRequest,
    LlmUsage,
    MemoryAdded,
    MemoryConsolidated,
    TaskEventData,
    ToolCalled,
    ToolReturned,
    event_data,
)
from loom_protocol.replays import (
    REPLAY_METADATA_KEY,
    ForkChanges,
    ForkInfo,
    RecordedChild,
    RecordedLlmStep,
    RecordedOutcome,
    RecordedToolStep,
    Recording,
    ReplayCounts,
    ReplayMode,
    ReplayReport,
    ReplaySpec,
)
from loom_protocol.settings import DATABASE_URL, ENV_PREFIX, NATS_URL, REDIS_URL, ServiceSettings
from loom_protocol.stored import (
    BUS_TASK_ASSIGNED,
    BUS_TASK_CANCEL,
    BUS_TASK_DEAD,
    BUS_TASK_PREFIX,
    BUS_TASK_STATUS_PREFIX,
    BUS_TASK_SUBMITTED,
    KIND_EVENT,
    KIND_MEMBER,
    KIND_TASK,
    TERMINAL_TASK_EVENT_TYPES,
    bus_member_type,
    bus_task_status_type,
    status_of_bus_type,
)
from loom_protocol.tasks import (
    TERMINAL_STATUSES,
    InvalidTransition,
    RejectedMessage,
    Task,
    TaskAction,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatus,
    TaskStatusChanged,
    TaskStreamChunk,
    TaskSubmission,
    TraceContext,
    is_terminal,
)

__version__ = "0.1.0"

__all__ = [
    "ALL_STREAMS",
    "AgentAction",
    "AgentAnswer",
    "AgentCapability",
    "AgentCard",
    "AgentThought",
    "BUS_TASK_ASSIGNED",
    "BUS_TASK_CANCEL",
    "BUS_TASK_DEAD",
    "BUS_TASK_PREFIX",
    "BUS_TASK_STATUS_PREFIX",
    "BUS_TASK_SUBMITTED",
    "BatchError",
    "BrokerLogging",
    "CloudEvent",
    "DATABASE_URL",
    "ENV_PREFIX",
    "EVENTS_STREAM",
    "EVENT_PAYLOADS",
    "ErrorBody",
    "ErrorDetail",
    "ErrorReported",
    "EventBatch",
    "EventBatchAck",
    "EventPayload",
    "EventType",
    "FieldError",
    "ForkChanges",
    "ForkInfo",
    "Heartbeat",
    "InstanceLoad",
    "InvalidTransition",
    "KIND_EVENT",
    "KIND_MEMBER",
    "KIND_TASK",
    "KnownAgents",
    "Liveness",
    "LlmRequest",
    "LlmUsage",
    "LogContextFilter",
    "LoomModel",
    "MAX_EVENT_BYTES",
    "MSG_ID_HEADER",
    "McpToolCall",
    "McpToolDefinition",
    "McpToolResult",
    "MemberChanged",
    "MembershipChange",
    "MemoryAdded",
    "MemoryConsolidated",
    "MemoryEntry",
    "MemoryTier",
    "NATS_URL",
    "PickReply",
    "PickRequest",
    "REDIS_URL",
    "REGISTRY_STREAM",
    "REJECTED_STREAM",
    "REPLAY_METADATA_KEY",
    "Readiness",
    "RecordedChild",
    "RecordedLlmStep",
    "RecordedOutcome",
    "RecordedToolStep",
    "Recording",
    "RejectedMessage",
    "ReplayCounts",
    "ReplayMode",
    "ReplayReport",
    "ReplaySpec",
    "ServiceSettings",
    "StreamSpec",
    "TASKS_STREAM",
    "TERMINAL_STATUSES",
    "TERMINAL_TASK_EVENT_TYPES",
    "Task",
    "TaskAction",
    "TaskCancelRequested",
    "TaskDeadLettered",
    "TaskEventData",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskStreamChunk",
    "TaskSubmission",
    "ToolCalled",
    "ToolReturned",
    "TraceContext",
    "UNKNOWN_AGENT_LABEL",
    "WIRE_MODELS",
    "assigned_msg_id",
    "broker_logging",
    "bus_member_type",
    "bus_task_status_type",
    "cancel_msg_id",
    "current_task_id",
    "dead_msg_id",
    "error_code",
    "event_data",
    "event_msg_id",
    "is_terminal",
    "json_schemas",
    "logging_config",
    "member_msg_id",
    "new_event",
    "otel_environment",
    "status_msg_id",
    "status_of_bus_type",
    "stream_config",
    "stream_create_error",
    "stream_create_request",
    "subjects",
    "submitted_msg_id",
    "tracing_enabled",
    "validation_reason",
]
