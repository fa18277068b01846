"""The public contract of loom_protocol: pinned so that any change to it fails loudly."""

import inspect

import loom_protocol
from loom_protocol import WIRE_MODELS, LoomModel, StreamSpec

EXPECTED_ALL = [
    "ALL_STREAMS",
    "API_KEYS_BUCKET",
    "APPROVAL_TIMEOUT_ACTION_KEY",
    "APPROVAL_TIMEOUT_KEY",
    "APPROVAL_TOOLS_KEY",
    "AccessPolicy",
    "AccessRule",
    "AgentAction",
    "AgentAnswer",
    "AgentCapability",
    "AgentCard",
    "AgentThought",
    "ApiKeyList",
    "ApiKeyMiddleware",
    "ApiKeyRecord",
    "ApprovalDecided",
    "ApprovalDecision",
    "ApprovalInput",
    "ApprovalRequest",
    "ApprovalRequested",
    "ApprovalTimeoutAction",
    "BUS_TASK_ASSIGNED",
    "BUS_TASK_CANCEL",
    "BUS_TASK_CANCEL_REQUEST",
    "BUS_TASK_DEAD",
    "BUS_TASK_PREFIX",
    "BUS_TASK_REPORT_PREFIX",
    "BUS_TASK_STATUS_PREFIX",
    "BUS_TASK_SUBMITTED",
    "BatchError",
    "BodyLimitMiddleware",
    "BrokerLogging",
    "CloudEvent",
    "CreatedApiKey",
    "DATABASE_URL",
    "DEFAULT_PRICES",
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
    "JOURNAL_BUCKET",
    "JournalEntry",
    "JournalKind",
    "KIND_EVENT",
    "KIND_MEMBER",
    "KIND_TASK",
    "KeyRing",
    "KnownAgents",
    "Liveness",
    "LlmRequest",
    "LlmUsage",
    "LogContextFilter",
    "LoomModel",
    "MAX_EVENT_BYTES",
    "MAX_STRIKES",
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
    "NewApiKey",
    "PICK_FUNCTION",
    "PICK_SCRIPT",
    "PICK_STRATEGIES",
    "PickReply",
    "PickRequest",
    "PickStrategy",
    "Price",
    "PriceTable",
    "REDIS_URL",
    "REGISTRY_STREAM",
    "REJECTED_STREAM",
    "REPLAY_METADATA_KEY",
    "RESUME_KEY",
    "Readiness",
    "RecordedChild",
    "RecordedLlmStep",
    "RecordedOutcome",
    "RecordedToolStep",
    "Recording",
    "RegistryKeys",
    "RejectedMessage",
    "ReplayCounts",
    "ReplayMode",
    "ReplayReport",
    "ReplaySpec",
    "STRIKE_SCRIPT",
    "STRIKE_WINDOW_S",
    "SUPERSEDED_ATTEMPT_HEADER",
    "SUPERSEDED_INSTANCE_HEADER",
    "Scope",
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
    "TaskResumed",
    "TaskStatus",
    "TaskStatusChanged",
    "TaskStreamChunk",
    "TaskSubmission",
    "ToolCalled",
    "ToolReturned",
    "TraceContext",
    "UNKNOWN_AGENT_LABEL",
    "WIRE_MODELS",
    "approval_key",
    "assigned_msg_id",
    "broker_logging",
    "bus_member_type",
    "bus_task_report_type",
    "bus_task_status_type",
    "cancel_msg_id",
    "cancel_request_msg_id",
    "current_task_id",
    "dead_msg_id",
    "encode_event",
    "error_code",
    "event_data",
    "event_msg_id",
    "is_terminal",
    "journal_key",
    "journal_task_filter",
    "json_schemas",
    "logging_config",
    "member_msg_id",
    "new_event",
    "otel_environment",
    "prices_from_json",
    "status_msg_id",
    "status_of_bus_type",
    "stream_config",
    "stream_create_error",
    "stream_create_request",
    "subjects",
    "submitted_msg_id",
    "tool_step_id",
    "tracing_enabled",
    "validation_reason",
]

EXPECTED_SUBJECTS_ALL = [
    "EVENT_ALL",
    "EVENT_SERVICES",
    "EVENT_WORKER_ALL",
    "EventSender",
    "PREFIX",
    "REGISTRY_AGENTS",
    "REGISTRY_HEARTBEAT_ALL",
    "REGISTRY_MEMBER_ALL",
    "REGISTRY_MEMBER_DOWN",
    "REGISTRY_MEMBER_UP",
    "REGISTRY_PICK",
    "REJECTED_ALL",
    "TASK_ALL",
    "TASK_ASSIGNED_ALL",
    "TASK_CANCEL_ALL",
    "TASK_CANCEL_REQUEST_ALL",
    "TASK_DEAD_ALL",
    "TASK_REPORT_ALL",
    "TASK_STATUS_ALL",
    "TASK_STREAM_ALL",
    "TASK_SUBMITTED_ALL",
    "event_sender",
    "event_sender_problem",
    "instance_event",
    "instance_events_of",
    "registry_heartbeat",
    "registry_member",
    "rejected",
    "service_event",
    "service_events_of",
    "task_assigned",
    "task_cancel",
    "task_cancel_request",
    "task_dead",
    "task_report",
    "task_reports_of",
    "task_status",
    "task_stream",
    "task_submitted",
    "token_of",
]

EXPECTED_WIRE_MODELS = [
    "AgentAction",
    "AgentAnswer",
    "AgentCard",
    "AgentThought",
    "ApiKeyList",
    "ApiKeyRecord",
    "ApprovalDecided",
    "ApprovalDecision",
    "ApprovalInput",
    "ApprovalRequest",
    "ApprovalRequested",
    "BatchError",
    "CloudEvent",
    "CreatedApiKey",
    "ErrorBody",
    "ErrorDetail",
    "ErrorReported",
    "EventBatch",
    "EventBatchAck",
    "FieldError",
    "ForkChanges",
    "ForkInfo",
    "Heartbeat",
    "InstanceLoad",
    "JournalEntry",
    "KnownAgents",
    "Liveness",
    "LlmRequest",
    "LlmUsage",
    "McpToolCall",
    "McpToolDefinition",
    "McpToolResult",
    "MemberChanged",
    "MemoryAdded",
    "MemoryConsolidated",
    "MemoryEntry",
    "NewApiKey",
    "PickReply",
    "PickRequest",
    "Readiness",
    "RecordedChild",
    "RecordedLlmStep",
    "RecordedOutcome",
    "RecordedToolStep",
    "Recording",
    "RejectedMessage",
    "ReplayCounts",
    "ReplayReport",
    "ReplaySpec",
    "Task",
    "TaskCancelRequested",
    "TaskDeadLettered",
    "TaskEventData",
    "TaskResumed",
    "TaskStatusChanged",
    "TaskStreamChunk",
    "TaskSubmission",
    "ToolCalled",
    "ToolReturned",
    "TraceContext",
]


def test_all_is_pinned() -> None:
    assert loom_protocol.__all__ == EXPECTED_ALL


def test_all_is_sorted_and_unique() -> None:
    assert loom_protocol.__all__ == sorted(set(loom_protocol.__all__))


def test_every_exported_name_resolves() -> None:
    for name in loom_protocol.__all__:
        assert getattr(loom_protocol, name) is not None, name


def test_subjects_module_contract_is_pinned() -> None:
    assert loom_protocol.subjects.__all__ == EXPECTED_SUBJECTS_ALL


def test_version() -> None:
    assert loom_protocol.__version__ == "0.1.0"


def test_wire_models_are_pinned_and_are_loom_models() -> None:
    assert sorted(WIRE_MODELS) == EXPECTED_WIRE_MODELS
    for name, model in WIRE_MODELS.items():
        assert model.__name__ == name
        assert issubclass(model, LoomModel)


def test_every_exported_loom_model_is_a_wire_model() -> None:
    exported_models = {
        name
        for name in loom_protocol.__all__
        if inspect.isclass(obj := getattr(loom_protocol, name)) and issubclass(obj, LoomModel)
    }
    # LoomModel and EventPayload are bases and StreamSpec is configuration: none goes on the wire.
    assert exported_models - {"LoomModel", "EventPayload", StreamSpec.__name__} == set(WIRE_MODELS)


def test_every_public_item_has_a_docstring() -> None:
    modules = [loom_protocol, loom_protocol.subjects]
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
                assert inspect.getdoc(obj), f"{module.__name__}.{name} has no docstring"
            if inspect.isfunction(obj) and inspect.signature(obj).parameters:
                assert "Args:" in (obj.__doc__ or ""), f"{name} docstring lacks an Args: section"


def test_every_event_type_with_data_has_its_payload_model_on_the_wire() -> None:
    from loom_protocol import EVENT_PAYLOADS, EventType

    assert {t.value for t in EventType} <= set(EVENT_PAYLOADS)
    assert {model.__name__ for model in EVENT_PAYLOADS.values()} <= set(WIRE_MODELS)
