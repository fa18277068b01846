"""The task journal: each step's outcome, stored once the broker accepted it, so that a later
attempt of the task resumes where an earlier one stopped.

The journal is a JetStream key-value bucket (:data:`JOURNAL_BUCKET`) with one key per step
outcome, written with ``create`` (only if absent): the first outcome recorded for a step is the
one every later attempt restores. Keys are ``<task>.<kind>.<n>`` (:func:`journal_key`):

* ``llm.<step>``: the response of LLM step ``step`` (a :class:`RecordedLlmStep`);
* ``tool.<step>_<index>``: the result of the ``index``-th tool call of that step (a
  :class:`RecordedToolStep`; a rejected call's rejection is recorded the same way);
* ``child.<n>``: the ``n``-th child task submitted (a :class:`RecordedChild` with its task id,
  written before the submission, so a resumed attempt waits for that child instead of
  submitting another).

A tool whose result was not recorded (the worker died while it ran, or before the broker
acknowledged its result) runs again on the next attempt; tools get an idempotency key
(``<task>/<step>.<index>``) to de-duplicate their own effects.
"""

from __future__ import annotations

import base64
from enum import StrEnum

from pydantic import AwareDatetime, Field

from loom_protocol.base import LoomModel, utc_now
from loom_protocol.replays import RecordedChild, RecordedLlmStep, RecordedToolStep

__all__ = [
    "JOURNAL_BUCKET",
    "JournalEntry",
    "JournalKind",
    "journal_key",
    "journal_task_filter",
    "tool_step_id",
]

JOURNAL_BUCKET = "LOOM_JOURNAL"
"""The default name of the journal's key-value bucket."""


class JournalKind(StrEnum):
    """What a journal entry records.

    Attributes:
        LLM: An LLM step's response.
        TOOL: A tool call's result.
        CHILD: A child task's submission.
    """

    LLM = "llm"
    TOOL = "tool"
    CHILD = "child"


def _task_token(task_id: str) -> str:
    # base64url without padding: any task id becomes a valid key token (no '.', no ':')
    return base64.urlsafe_b64encode(task_id.encode()).decode().rstrip("=")


def tool_step_id(step: int, index: int) -> str:
    """The journal id of the ``index``-th tool call of LLM step ``step``.

    Args:
        step: The LLM step, from 1.
        index: The call's position among that step's tool calls, from 0.

    Returns:
        ``"<step>_<index>"``.
    """
    return f"{step}_{index}"


def journal_key(task_id: str, kind: JournalKind | str, entry_id: str | int) -> str:
    """The key of one entry: ``<task token>.<kind>.<entry id>``.

    Args:
        task_id: The task (any id; it is encoded into one valid key token).
        kind: What the entry records.
        entry_id: The step (``llm``), :func:`tool_step_id` (``tool``) or child index (``child``).

    Returns:
        The key.

    Raises:
        ValueError: If ``kind`` is not a :class:`JournalKind`.
    """
    return f"{_task_token(task_id)}.{JournalKind(kind).value}.{entry_id}"


def journal_task_filter(task_id: str) -> str:
    """The key filter matching every entry of one task.

    Args:
        task_id: The task.

    Returns:
        ``<task token>.>``.
    """
    return f"{_task_token(task_id)}.>"


class JournalEntry(LoomModel):
    """One recorded step outcome (exactly one of ``llm``, ``tool``, ``child`` is set).

    Attributes:
        kind: What it records.
        attempt: The attempt that recorded it.
        instance_id: The instance that recorded it.
        at: When.
        llm: The LLM step.
        tool: The tool step.
        child: The child task.
    """

    kind: JournalKind
    attempt: int = Field(default=1, ge=0)
    instance_id: str | None = None
    at: AwareDatetime = Field(default_factory=utc_now)
    llm: RecordedLlmStep | None = None
    tool: RecordedToolStep | None = None
    child: RecordedChild | None = None
