"""Implementation of :mod:`loom_protocol.schema` (kept apart so the package can re-export it
without ``python -m loom_protocol.schema`` importing the module twice)."""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from loom_protocol.agents import (
    AgentCard,
    Heartbeat,
    InstanceLoad,
    KnownAgents,
    MemberChanged,
    PickReply,
    PickRequest,
)
from loom_protocol.approvals import ApprovalDecision, ApprovalInput, ApprovalRequest
from loom_protocol.auth import ApiKeyList, ApiKeyRecord, CreatedApiKey, NewApiKey
from loom_protocol.events import BatchError, CloudEvent, EventBatch, EventBatchAck
from loom_protocol.http import ErrorBody, ErrorDetail, FieldError, Liveness, Readiness
from loom_protocol.journal import JournalEntry
from loom_protocol.mcp import McpToolCall, McpToolDefinition, McpToolResult
from loom_protocol.memory import MemoryEntry
from loom_protocol.payloads import EVENT_PAYLOADS
from loom_protocol.replays import (
    ForkChanges,
    ForkInfo,
    RecordedChild,
    RecordedLlmStep,
    RecordedOutcome,
    RecordedToolStep,
    Recording,
    ReplayCounts,
    ReplayReport,
    ReplaySpec,
)
from loom_protocol.tasks import (
    RejectedMessage,
    Task,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStatusChanged,
    TaskStreamChunk,
    TaskSubmission,
    TraceContext,
)

__all__ = ["WIRE_MODELS", "json_schemas", "main"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_WIRE: tuple[type[BaseModel], ...] = (
    Task,
    TaskSubmission,
    TraceContext,
    TaskStatusChanged,
    TaskCancelRequested,
    TaskDeadLettered,
    TaskStreamChunk,
    RejectedMessage,
    AgentCard,
    InstanceLoad,
    Heartbeat,
    PickRequest,
    PickReply,
    KnownAgents,
    MemberChanged,
    CloudEvent,
    EventBatch,
    EventBatchAck,
    BatchError,
    MemoryEntry,
    McpToolDefinition,
    McpToolCall,
    McpToolResult,
    *EVENT_PAYLOADS.values(),  # the typed data of every event type
    Recording,
    JournalEntry,
    ApprovalRequest,
    ApprovalDecision,
    ApprovalInput,
    RecordedLlmStep,
    RecordedToolStep,
    RecordedChild,
    RecordedOutcome,
    ReplaySpec,
    ForkChanges,
    ReplayReport,
    ReplayCounts,
    ForkInfo,
    ErrorBody,
    ErrorDetail,
    FieldError,
    Liveness,
    Readiness,
    ApiKeyRecord,
    NewApiKey,
    CreatedApiKey,
    ApiKeyList,
)
WIRE_MODELS: dict[str, type[BaseModel]] = {model.__name__: model for model in _WIRE}
"""Every model that travels on the wire, by class name."""


def json_schemas() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of the whole wire protocol, as one document.

    Every wire model is a definition under ``$defs`` (with the enums and nested models they
    use), described in its wire form (camelCase aliases) as accepted on input, so
    references such as ``#/$defs/TraceContext`` resolve within the document.

    Returns:
        ``{"$schema": ..., "title": "Loom wire protocol", "version": <package version>,
        "$defs": {name: schema}}``.
    """
    from loom_protocol import __version__  # the package is fully imported by now

    _, top = models_json_schema(
        [(model, "validation") for model in WIRE_MODELS.values()],
        by_alias=True,
        ref_template="#/$defs/{model}",
    )
    return {
        "$schema": _DIALECT,
        "title": "Loom wire protocol",
        "version": __version__,
        "$defs": top.get("$defs", {}),
    }


def main() -> None:
    """Write :func:`json_schemas` to standard output as indented JSON."""
    sys.stdout.write(json.dumps(json_schemas(), indent=2, sort_keys=True) + "\n")
