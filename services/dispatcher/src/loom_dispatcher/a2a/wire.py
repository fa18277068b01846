"""The A2A 1.0 request objects this server reads, as pydantic models of their ProtoJSON form
(``specification/a2a.proto``): camelCase or the proto's snake_case names, enum values by name or
number, unknown fields ignored (forward compatibility, as the spec asks)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Role(StrEnum):
    UNSPECIFIED = "ROLE_UNSPECIFIED"
    USER = "ROLE_USER"
    AGENT = "ROLE_AGENT"


class TaskState(StrEnum):
    """The A2A task states (``TaskState``), in proto order."""

    UNSPECIFIED = "TASK_STATE_UNSPECIFIED"
    SUBMITTED = "TASK_STATE_SUBMITTED"
    WORKING = "TASK_STATE_WORKING"
    COMPLETED = "TASK_STATE_COMPLETED"
    FAILED = "TASK_STATE_FAILED"
    CANCELED = "TASK_STATE_CANCELED"
    INPUT_REQUIRED = "TASK_STATE_INPUT_REQUIRED"
    REJECTED = "TASK_STATE_REJECTED"
    AUTH_REQUIRED = "TASK_STATE_AUTH_REQUIRED"


TERMINAL_STATES = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED})
INTERRUPTED_STATES = frozenset({TaskState.INPUT_REQUIRED, TaskState.AUTH_REQUIRED})


def _by_number(members: list[str]) -> Any:
    """A before-validator that takes an enum value by its proto number too (ProtoJSON allows it)."""

    def pick(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(members):
            return members[value]
        return value

    return pick


class Part(Wire):
    """A message part: exactly one of ``text``, ``raw`` (base64), ``url`` or ``data`` (any JSON)."""

    text: str | None = None
    raw: str | None = None
    url: str | None = None
    data: Any = None
    metadata: dict[str, Any] | None = None
    filename: str | None = None
    media_type: str | None = None

    @model_validator(mode="after")
    def _one_content(self) -> Part:
        given = [name for name in ("text", "raw", "url", "data") if name in self.model_fields_set]
        if len(given) != 1:
            raise ValueError(f"a part holds exactly one of text, raw, url or data (given: {given or 'none'})")
        return self

    @property
    def has_data(self) -> bool:
        return "data" in self.model_fields_set


class Message(Wire):
    message_id: str = Field(min_length=1, max_length=256)
    context_id: str | None = Field(default=None, max_length=256)
    task_id: str | None = Field(default=None, max_length=256)
    role: Role
    parts: list[Part] = Field(min_length=1, max_length=1000)
    metadata: dict[str, Any] | None = None
    extensions: list[str] = Field(default_factory=list)
    reference_task_ids: list[str] = Field(default_factory=list)

    _role_number = field_validator("role", mode="before")(_by_number([r.value for r in Role]))


class SendMessageConfiguration(Wire):
    accepted_output_modes: list[str] = Field(default_factory=list)
    task_push_notification_config: dict[str, Any] | None = None
    history_length: int | None = Field(default=None, ge=0)
    return_immediately: bool = False


class SendMessageRequest(Wire):
    tenant: str = ""
    message: Message
    configuration: SendMessageConfiguration = Field(default_factory=SendMessageConfiguration)
    metadata: dict[str, Any] | None = None


class TaskRequest(Wire):
    """``GetTaskRequest``, ``CancelTaskRequest`` and ``SubscribeToTaskRequest``: a task by id."""

    tenant: str = ""
    id: str = Field(min_length=1, max_length=256)
    history_length: int | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None


class ListTasksRequest(Wire):
    tenant: str = ""
    context_id: str = Field(default="", max_length=256)
    status: TaskState = TaskState.UNSPECIFIED
    page_size: int | None = Field(default=None, ge=1)
    page_token: str = Field(default="", max_length=1024)
    history_length: int | None = Field(default=None, ge=0)
    status_timestamp_after: AwareDatetime | None = None
    include_artifacts: bool = False

    _status_number = field_validator("status", mode="before")(_by_number([s.value for s in TaskState]))
