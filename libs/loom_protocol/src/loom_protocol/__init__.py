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
* :mod:`loom_protocol.jetstream` -- stream specs and the ``Nats-Msg-Id`` rule.
* :mod:`loom_protocol.memory` (memory entries), :mod:`loom_protocol.mcp` (tool calls).
* :mod:`loom_protocol.schema` -- JSON Schema export (``python -m loom_protocol.schema``).
"""

from loom_protocol import subjects
from loom_protocol._schema import WIRE_MODELS, json_schemas
from loom_protocol.agents import (
    AgentCapability,
    AgentCard,
    Heartbeat,
    InstanceLoad,
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
    submitted_msg_id,
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
    "CloudEvent",
    "EVENTS_STREAM",
    "EVENT_PAYLOADS",
    "ErrorReported",
    "EventBatch",
    "EventBatchAck",
    "EventPayload",
    "EventType",
    "ForkChanges",
    "ForkInfo",
    "Heartbeat",
    "InstanceLoad",
    "InvalidTransition",
    "KIND_EVENT",
    "KIND_MEMBER",
    "KIND_TASK",
    "LlmRequest",
    "LlmUsage",
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
    "PickReply",
    "PickRequest",
    "REGISTRY_STREAM",
    "REJECTED_STREAM",
    "REPLAY_METADATA_KEY",
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
    "ToolCalled",
    "ToolReturned",
    "TraceContext",
    "WIRE_MODELS",
    "assigned_msg_id",
    "bus_member_type",
    "bus_task_status_type",
    "cancel_msg_id",
    "dead_msg_id",
    "event_data",
    "event_msg_id",
    "is_terminal",
    "json_schemas",
    "member_msg_id",
    "new_event",
    "status_msg_id",
    "status_of_bus_type",
    "subjects",
    "submitted_msg_id",
    "validation_reason",
]
