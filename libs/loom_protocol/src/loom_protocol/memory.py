"""Memory entries and tiers: what ``memory.add`` records and the session memory holds.

Memory is kept per node (an agent or agent instance, ``node_id``) in three tiers: the
current session, a working set and long-term memory.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, Field

from loom_protocol.base import LoomModel, utc_now

__all__ = ["SESSIONS_BUCKET", "MemoryEntry", "MemoryTier"]

SESSIONS_BUCKET = "LOOM_SESSIONS"
"""The default name of the session memory's key-value bucket (shared by every worker)."""


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
