"""Loom tasks as A2A tasks (ProtoJSON dicts), and A2A messages as Loom task inputs and approval
decisions.

States: pending and dispatched are SUBMITTED, running WORKING, input_required INPUT_REQUIRED,
completed COMPLETED, failed FAILED, cancelled CANCELED, dead FAILED, except a task refused
because no instance of its agent was ever seen (dead, never dispatched): REJECTED. The context
id is the task's session id. A completed task's result is its one artifact, ``answer``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from loom_protocol import ApprovalInput, Task, TaskStatus
from pydantic import ValidationError

from . import errors
from .wire import Message, SendMessageRequest, TaskState

_STATES: dict[TaskStatus, TaskState] = {
    TaskStatus.PENDING: TaskState.SUBMITTED,
    TaskStatus.DISPATCHED: TaskState.SUBMITTED,
    TaskStatus.RUNNING: TaskState.WORKING,
    TaskStatus.INPUT_REQUIRED: TaskState.INPUT_REQUIRED,
    TaskStatus.COMPLETED: TaskState.COMPLETED,
    TaskStatus.FAILED: TaskState.FAILED,
    TaskStatus.CANCELLED: TaskState.CANCELED,
    TaskStatus.DEAD: TaskState.FAILED,
}
REFUSED_PREFIX = "unknown agent "
"""How the reason of a task refused for an unknown agent begins (admission.unknown_agent_reason)."""
ANSWER_ARTIFACT = "answer"
HOW_TO_ANSWER = (
    "Answer with a message carrying this taskId: a data part "
    '{"approve": true, "arguments": {...}} (arguments optional: they replace the call\'s) or '
    '{"approve": false, "reason": "..."}, or the text "yes" or "no" (what follows a "no" is the reason).'
)
_YES = frozenset({"yes", "y", "approve", "approved", "ok"})
_NO = frozenset({"no", "n", "reject", "rejected", "deny", "denied"})
_FIRST_WORD = re.compile(r"^\s*([A-Za-z]+)[\s.,:;!-]*(.*)$", re.DOTALL)


def refused(task: Task) -> bool:
    """True for a task refused because the registry never saw its agent."""
    return (
        task.status is TaskStatus.DEAD and task.attempt == 0 and (task.error or "").startswith(REFUSED_PREFIX)
    )


def state_of(task: Task) -> TaskState:
    return TaskState.REJECTED if refused(task) else _STATES[task.status]


def context_of(task: Task) -> str:
    """The task's A2A context id: its session id (every task created over A2A has one)."""
    return task.session_id or task.task_id


def timestamp(at: datetime) -> str:
    """``at`` as ProtoJSON writes a Timestamp: UTC, milliseconds, ``Z``."""
    at = at.astimezone(UTC)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def text_part(text: str) -> dict[str, Any]:
    return {"text": text}


def data_part(value: Any) -> dict[str, Any]:
    return {"data": value, "mediaType": "application/json"}


def agent_message(task: Task, message_id: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "contextId": context_of(task),
        "taskId": task.task_id,
        "role": "ROLE_AGENT",
        "parts": parts,
    }


def _status_message(task: Task) -> dict[str, Any] | None:
    """What the agent says with the task's status: the call to approve, or why it ended."""
    message_id = f"{task.task_id}-{task.status.value}-{task.attempt}"
    call = task.pending_approval
    if task.status is TaskStatus.INPUT_REQUIRED and call is not None:
        question = (
            f"Approve the call {call.tool}({json.dumps(call.arguments, sort_keys=True)})? {HOW_TO_ANSWER}"
        )
        return agent_message(task, message_id, [text_part(question), data_part(call.to_wire())])
    if task.error and state_of(task) in (TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED):
        return agent_message(task, message_id, [text_part(task.error)])
    return None


def status_of(task: Task) -> dict[str, Any]:
    """The task's A2A ``TaskStatus``."""
    status: dict[str, Any] = {"state": state_of(task).value, "timestamp": timestamp(task.updated_at)}
    if (message := _status_message(task)) is not None:
        status["message"] = message
    return status


def answer_artifact(task: Task) -> dict[str, Any] | None:
    """A completed task's result as an artifact: the answer text (when there is one) and the
    whole result as data."""
    if task.status is not TaskStatus.COMPLETED:
        return None
    result = task.result
    parts: list[dict[str, Any]]
    if isinstance(result, str):
        parts = [text_part(result)]
    elif isinstance(result, dict) and isinstance(result.get("answer"), str):
        parts = [text_part(result["answer"]), data_part(result)]
    else:
        parts = [data_part(result)]
    return {"artifactId": ANSWER_ARTIFACT, "name": ANSWER_ARTIFACT, "parts": parts}


def task_of(task: Task, *, artifacts: bool = True) -> dict[str, Any]:
    """The A2A ``Task`` of a Loom task; its Loom details under ``metadata.loom``."""
    loom: dict[str, Any] = {
        "agentId": task.target_agent,
        "status": task.status.value,
        "attempt": task.attempt,
        "createdAt": timestamp(task.created_at),
    }
    if task.instance_id:
        loom["instanceId"] = task.instance_id
    if task.parent_task_id:
        loom["parentTaskId"] = task.parent_task_id
    body: dict[str, Any] = {
        "id": task.task_id,
        "contextId": context_of(task),
        "status": status_of(task),
        "metadata": {"loom": loom},
    }
    if artifacts:
        artifact = answer_artifact(task)
        body["artifacts"] = [artifact] if artifact is not None else []
    return body


def status_update(task: Task, status: dict[str, Any]) -> dict[str, Any]:
    """A ``StreamResponse`` holding a ``TaskStatusUpdateEvent``."""
    return {"statusUpdate": {"taskId": task.task_id, "contextId": context_of(task), "status": status}}


def artifact_update(task: Task, artifact: dict[str, Any]) -> dict[str, Any]:
    """A ``StreamResponse`` holding the whole artifact (``lastChunk``)."""
    update = {"taskId": task.task_id, "contextId": context_of(task), "artifact": artifact, "lastChunk": True}
    return {"artifactUpdate": update}


# -- what a client sends ---------------------------------------------------------------------


def task_inputs(request: SendMessageRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters and metadata of the task a message starts.

    Text parts, joined by new lines, are ``parameters.prompt``; data parts (JSON objects) are
    merged into ``parameters`` (the text wins over a ``prompt`` in the data). The task's metadata is
    the request's ``metadata`` and then the message's (``approvalTools``, ``timeoutS``, ...).
    """
    message = request.message
    parameters: dict[str, Any] = {}
    texts: list[str] = []
    for index, part in enumerate(message.parts):
        if part.text is not None:
            texts.append(part.text)
        elif part.has_data:
            if not isinstance(part.data, dict):
                raise errors.invalid_params(
                    "a data part must hold a JSON object (it is merged into the task's parameters)",
                    [(f"message.parts[{index}].data", "not a JSON object")],
                )
            parameters.update(part.data)
        else:
            raise errors.content_type_not_supported(
                f"message.parts[{index}] is a file (raw or url); Loom agents take text and JSON data parts"
            )
    if texts:
        parameters["prompt"] = "\n".join(texts)
    return parameters, {**(request.metadata or {}), **(message.metadata or {})}


def decision_of(message: Message) -> tuple[bool, ApprovalInput]:
    """The approval decision a message answering an INPUT_REQUIRED task carries (see
    :data:`HOW_TO_ANSWER`); ``by`` from the data part or ``message.metadata.by``."""
    by = (message.metadata or {}).get("by")
    for index, part in enumerate(message.parts):
        if part.has_data and isinstance(part.data, dict) and "approve" in part.data:
            given = part.data
            approve = given["approve"]
            if not isinstance(approve, bool):
                raise errors.invalid_params(
                    "approve must be true or false",
                    [(f"message.parts[{index}].data.approve", "not a boolean")],
                )
            if not approve and given.get("arguments") is not None:
                field = f"message.parts[{index}].data.arguments"
                raise errors.invalid_params("a rejection takes no arguments", [(field, "only approve does")])
            fields = {k: given[k] for k in ("arguments", "reason", "by") if given.get(k) is not None}
            return approve, _approval_input({"by": by, **fields}, f"message.parts[{index}].data")
    text = " ".join(part.text for part in message.parts if part.text is not None)
    if (match := _FIRST_WORD.match(text)) is not None and match.group(1).lower() in _YES | _NO:
        approve = match.group(1).lower() in _YES
        reason = match.group(2).strip() or None
        return approve, _approval_input({"by": by, "reason": reason}, "message.parts")
    raise errors.invalid_params(
        "the task waits for approval of a tool call. " + HOW_TO_ANSWER,
        [("message.parts", "no decision found")],
    )


def _approval_input(fields: dict[str, Any], where: str) -> ApprovalInput:
    try:
        return ApprovalInput.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise errors.invalid_fields(exc, [where]) from exc
