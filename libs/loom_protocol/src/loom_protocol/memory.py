"""Memory operations (seed 001 ``memory_ops``): requests and responses for an agent's memory.

Memory is kept per node (an agent or agent instance, ``node_id``) in three tiers: the
current session, a working set and long-term memory.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, Self

from pydantic import AwareDatetime, Field, model_validator
from pydantic_core import PydanticCustomError

from loom_protocol.base import LoomModel, utc_now

__all__ = [
    "MemoryEntry",
    "MemoryOperation",
    "MemoryRequest",
    "MemoryResponse",
    "MemoryTier",
]


class MemoryTier(StrEnum):
    """Where a memory lives.

    Attributes:
        SESSION: The current session only.
        WORKING: The working set, kept across a few sessions.
        LONG_TERM: Long-term memory.
    """

    SESSION = "session"
    WORKING = "working"
    LONG_TERM = "long_term"


class MemoryOperation(StrEnum):
    """What a :class:`MemoryRequest` asks for.

    Attributes:
        STORE: Store ``entry``.
        RETRIEVE: Retrieve entries (``entry_id`` for one, otherwise the most recent).
        UPDATE: Replace entry ``entry_id`` with ``entry``.
        DELETE: Delete entry ``entry_id``.
        SEARCH: Search entries matching ``query``.
        COMPRESS: Compress / consolidate the tier.
    """

    STORE = "store"
    RETRIEVE = "retrieve"
    UPDATE = "update"
    DELETE = "delete"
    SEARCH = "search"
    COMPRESS = "compress"


class MemoryEntry(LoomModel):
    """One memory.

    Attributes:
        entry_id: Unique id.
        node_id: The node (agent) it belongs to.
        tier: Where it lives.
        content: The remembered text.
        importance: How important it is, from 0 to 1.
        metadata: Free-form annotations.
        created_at: When it was created.
    """

    entry_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1)
    node_id: str = Field(min_length=1)
    tier: MemoryTier = MemoryTier.SESSION
    content: str
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=utc_now)


_REQUIRED: dict[MemoryOperation, tuple[str, ...]] = {
    MemoryOperation.STORE: ("entry",),
    MemoryOperation.RETRIEVE: (),
    MemoryOperation.UPDATE: ("entry_id", "entry"),
    MemoryOperation.DELETE: ("entry_id",),
    MemoryOperation.SEARCH: ("query",),
    MemoryOperation.COMPRESS: (),
}


class MemoryRequest(LoomModel):
    """A memory operation.

    Which fields are required depends on the operation: ``store`` needs ``entry``;
    ``update`` needs ``entry_id`` and ``entry``; ``delete`` needs ``entry_id``; ``search``
    needs ``query``.

    Attributes:
        operation: What to do.
        node_id: Whose memory.
        tier: Which tier.
        entry: The entry to store or the replacement to update with.
        entry_id: The entry to update, delete or retrieve.
        query: The search query.
        limit: Most entries to return (1 to 1000).
    """

    operation: MemoryOperation
    node_id: str = Field(min_length=1)
    tier: MemoryTier = MemoryTier.SESSION
    entry: MemoryEntry | None = None
    entry_id: str | None = None
    query: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)

    @model_validator(mode="after")
    def _check_operation_fields(self) -> Self:
        missing = [name for name in _REQUIRED[self.operation] if getattr(self, name) in (None, "")]
        if missing:
            wire = ", ".join(repr(type(self).model_fields[name].alias or name) for name in missing)
            raise PydanticCustomError(
                "memory_request",
                "operation '{operation}' requires {fields}",
                {"operation": self.operation.value, "fields": wire},
            )
        return self


class MemoryResponse(LoomModel):
    """The answer to a :class:`MemoryRequest`.

    Attributes:
        success: Whether the operation succeeded.
        entries: The entries returned (retrieve, search) or affected.
        error: Why it failed.
    """

    success: bool
    entries: list[MemoryEntry] = Field(default_factory=list)
    error: str | None = None
