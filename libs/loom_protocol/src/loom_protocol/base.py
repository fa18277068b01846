"""The base model every Loom wire message inherits, and the field types they share.

Every message on the wire is a :class:`LoomModel`: camelCase on the wire, snake_case in
Python, both accepted on input, unknown fields ignored and instances frozen. The
constrained string types below are the single definition of what an agent id, an
instance id or a task id may contain; all three end up as NATS subject tokens, so none
of them may contain ``.``, ``*``, ``>`` or whitespace.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from time import time_ns
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = [
    "AgentId",
    "InstanceId",
    "Label",
    "LoomModel",
    "TaskId",
    "check_traceparent",
    "is_valid_traceparent",
    "new_id",
    "trace_id_of",
    "utc_now",
]

AgentId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
"""An agent id (``AgentCard.agent_id``, ``Task.target_agent``): a NATS subject token."""

InstanceId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]
"""A worker instance id: a NATS subject token."""

TaskId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_:-]+$")]
"""A task id: 1..128 characters of ``[A-Za-z0-9_:-]`` (no dot, it is a subject token)."""

Label = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:@/+=-]+$")]
"""A free-form name that is not a subject token (``Task.source_agent``, ``Task.session_id``): 1..256
characters of ``[A-Za-z0-9_.:@/+=-]`` (no whitespace, no NATS wildcards, nothing a store cannot hold)."""

_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime.

    Returns:
        ``datetime.now(UTC)``.
    """
    return datetime.now(UTC)


def new_id() -> str:
    """Return a new time-ordered unique id (a UUIDv7, as 32 lower-case hex digits).

    The first 48 bits are the Unix time in milliseconds, so ids sort roughly by creation
    time (kind to database indexes); the remaining 74 bits are random.

    Returns:
        The id, e.g. ``"0192f1c4a9b27c3e8d4f5a6b7c8d9e0f"``.
    """
    millis = time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return f"{value:032x}"  # what uuid.UUID(int=value).hex gives, without building the UUID


def check_traceparent(value: str) -> str:
    """Validate a W3C ``traceparent`` header value (version ``00``).

    Args:
        value: The header value, ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``.

    Returns:
        The value unchanged.

    Raises:
        PydanticCustomError: If the format is wrong or the trace id / parent id is all zeros
            (pydantic turns it into a ``ValidationError`` naming the field).
    """
    match = _TRACEPARENT_RE.fullmatch(value)
    if match is None:
        raise PydanticCustomError(
            "traceparent_format",
            "invalid traceparent '{value}': expected '00-<32 lower-case hex>-<16 lower-case hex>-<2 hex>'",
            {"value": value[:80]},
        )
    if match.group(1) == _ZERO_TRACE_ID or match.group(2) == _ZERO_PARENT_ID:
        raise PydanticCustomError(
            "traceparent_zero_id",
            "invalid traceparent '{value}': an all-zero trace id or parent id is not allowed",
            {"value": value},
        )
    return value


def is_valid_traceparent(value: str) -> bool:
    """Tell whether a string is a valid W3C ``traceparent`` (see :func:`check_traceparent`).

    Args:
        value: The candidate header value.

    Returns:
        True if :func:`check_traceparent` would accept it.
    """
    match = _TRACEPARENT_RE.fullmatch(value)
    return match is not None and match.group(1) != _ZERO_TRACE_ID and match.group(2) != _ZERO_PARENT_ID


def trace_id_of(traceparent: str | None) -> str | None:
    """Return the 32-hex trace id of a ``traceparent`` value, or None.

    Args:
        traceparent: A (validated) traceparent value, or None.

    Returns:
        The trace id part, or None when ``traceparent`` is None.
    """
    return None if traceparent is None else traceparent[3:35]


class LoomModel(BaseModel):
    """Base class of every Loom wire model.

    Configuration:

    * ``alias_generator=to_camel``: the wire format is camelCase (``targetAgent``), the
      Python attributes snake_case (``target_agent``).
    * ``populate_by_name=True``: input is accepted in either spelling.
    * ``extra="ignore"``: forward compatibility. A newer producer may add fields; an older
      consumer ignores them instead of rejecting the whole message. (Caveat: a consumer
      that re-publishes a model it parsed drops the fields it does not know.)
    * ``frozen=True``: messages are facts and are not mutated after creation; use
      ``model_copy(update=...)`` to derive a new one. :class:`~loom_protocol.tasks.Task`
      is the one exception.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """Return the wire form as JSON-compatible Python data.

        Returns:
            ``model_dump(mode="json", by_alias=True, exclude_none=True)``: camelCase keys,
            fields whose value is None left out.
        """
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> bytes:
        """Return the wire form as UTF-8 JSON bytes, ready to publish.

        Returns:
            ``model_dump_json(by_alias=True, exclude_none=True)`` encoded as UTF-8.
        """
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse and validate a message from its JSON wire form.

        Args:
            data: JSON text or UTF-8 bytes (camelCase or snake_case keys).

        Returns:
            The validated model.

        Raises:
            pydantic.ValidationError: If the payload is not valid JSON or not a valid message.
        """
        return cls.model_validate_json(data)
