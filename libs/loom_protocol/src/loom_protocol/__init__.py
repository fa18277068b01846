"""Loom's shared wire contract: pydantic models, subject names and stream definitions.

This package is the only code Loom's services share. It does no I/O and depends on pydantic
alone. Every public name is re-exported here; modules:

* :mod:`loom_protocol.base` -- :class:`LoomModel`, the base of every wire model.
* :mod:`loom_protocol.tasks` -- :class:`Task`, its state machine and lifecycle messages.
* :mod:`loom_protocol.agents` -- agent cards, heartbeats and registry messages.
* :mod:`loom_protocol.events` -- the CloudEvents 1.0 envelope and event types.
* :mod:`loom_protocol.errors` -- :func:`validation_reason`.
* :mod:`loom_protocol.subjects` -- every NATS subject (import the module: ``subjects.task_status(...)``).
* :mod:`loom_protocol.jetstream` -- stream specs and the ``Nats-Msg-Id`` rule.
* :mod:`loom_protocol.memory`, :mod:`loom_protocol.mcp`, :mod:`loom_protocol.streaming`.
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
    ALL_EVENT_TYPES,
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
from loom_protocol.mcp import (
    McpPrompt,
    McpPromptArgument,
    McpResource,
    McpToolCall,
    McpToolDefinition,
    McpToolResult,
)
from loom_protocol.memory import (
    MemoryEntry,
    MemoryOperation,
    MemoryRequest,
    MemoryResponse,
    MemoryTier,
)
from loom_protocol.streaming import StreamChunk, StreamChunkKind
from loom_protocol.tasks import (
    ALLOWED_TRANSITIONS,
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
    can_transition,
    is_terminal,
)

__version__ = "0.1.0"

__all__ = [
    "ALLOWED_TRANSITIONS",
    "ALL_EVENT_TYPES",
    "ALL_STREAMS",
    "AgentCapability",
    "AgentCard",
    "BatchError",
    "CloudEvent",
    "EVENTS_STREAM",
    "EventBatch",
    "EventBatchAck",
    "EventType",
    "Heartbeat",
    "InstanceLoad",
    "InvalidTransition",
    "LoomModel",
    "MAX_EVENT_BYTES",
    "MSG_ID_HEADER",
    "McpPrompt",
    "McpPromptArgument",
    "McpResource",
    "McpToolCall",
    "McpToolDefinition",
    "McpToolResult",
    "MemberChanged",
    "MembershipChange",
    "MemoryEntry",
    "MemoryOperation",
    "MemoryRequest",
    "MemoryResponse",
    "MemoryTier",
    "PickReply",
    "PickRequest",
    "REGISTRY_STREAM",
    "REJECTED_STREAM",
    "RejectedMessage",
    "StreamChunk",
    "StreamChunkKind",
    "StreamSpec",
    "TASKS_STREAM",
    "TERMINAL_STATUSES",
    "Task",
    "TaskAction",
    "TaskCancelRequested",
    "TaskDeadLettered",
    "TaskStatus",
    "TaskStatusChanged",
    "TraceContext",
    "WIRE_MODELS",
    "assigned_msg_id",
    "can_transition",
    "cancel_msg_id",
    "dead_msg_id",
    "event_msg_id",
    "is_terminal",
    "json_schemas",
    "member_msg_id",
    "new_event",
    "status_msg_id",
    "subjects",
    "submitted_msg_id",
    "validation_reason",
]
