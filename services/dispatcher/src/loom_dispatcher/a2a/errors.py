"""The JSON-RPC errors the A2A endpoints answer: the JSON-RPC 2.0 codes and the A2A ones
(-32001 .. -32009), each with its ``google.rpc`` detail in ``error.data`` as the spec asks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

DOMAIN = "a2a-protocol.org"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
SUPPORTED_VERSION = "1.0"


class A2AError(Exception):
    """One JSON-RPC error answer: ``code``, ``message`` and its ErrorInfo ``reason``."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str,
        *,
        metadata: dict[str, str] | None = None,
        violations: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.violations = violations or []

    def body(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object."""
        data: list[dict[str, Any]] = [
            {"@type": ERROR_INFO, "reason": self.reason, "domain": DOMAIN, "metadata": self.metadata}
        ]
        if self.violations:
            violations = [{"field": f, "description": d} for f, d in self.violations]
            data.append({"@type": BAD_REQUEST, "fieldViolations": violations})
        return {"code": self.code, "message": self.message, "data": data}


def parse_error(detail: str) -> A2AError:
    return A2AError(-32700, f"Invalid JSON payload: {detail}", "PARSE_ERROR")


def invalid_request(detail: str) -> A2AError:
    return A2AError(-32600, f"Request payload validation error: {detail}", "INVALID_REQUEST")


def method_not_found(method: str) -> A2AError:
    return A2AError(-32601, f"Method not found: {method!r}", "METHOD_NOT_FOUND", metadata={"method": method})


def invalid_params(detail: str, violations: list[tuple[str, str]] | None = None) -> A2AError:
    return A2AError(-32602, f"Invalid parameters: {detail}", "INVALID_PARAMS", violations=violations)


def invalid_fields(exc: ValidationError, prefix: Iterable[str] = ()) -> A2AError:
    """The invalid-params answer naming each field a model refused (``message.parts``)."""
    violations = [(_path([*prefix, *err["loc"]]), err["msg"]) for err in exc.errors()]
    summary = "; ".join(f"{field}: {why}" for field, why in violations[:5])
    return invalid_params(summary, violations)


def _path(loc: list[Any]) -> str:
    """``message.parts[0].data`` from a pydantic location."""
    path = ""
    for step in loc:
        path += f"[{step}]" if isinstance(step, int) else f".{step}" if path else str(step)
    return path or "params"


def internal(detail: str) -> A2AError:
    return A2AError(-32603, f"Internal error: {detail}", "INTERNAL_ERROR")


def task_not_found(task_id: str) -> A2AError:
    return A2AError(-32001, f"Task not found: {task_id!r}", "TASK_NOT_FOUND", metadata={"taskId": task_id})


def not_cancelable(task_id: str, state: str) -> A2AError:
    return A2AError(
        -32002,
        f"Task cannot be canceled: {task_id!r} already ended in {state}",
        "TASK_NOT_CANCELABLE",
        metadata={"taskId": task_id, "state": state},
    )


def push_not_supported() -> A2AError:
    return A2AError(
        -32003,
        "Push Notification is not supported (capabilities.pushNotifications is false)",
        "PUSH_NOTIFICATION_NOT_SUPPORTED",
    )


def unsupported(detail: str, **metadata: str) -> A2AError:
    return A2AError(
        -32004, f"This operation is not supported: {detail}", "UNSUPPORTED_OPERATION", metadata=metadata
    )


def content_type_not_supported(detail: str) -> A2AError:
    return A2AError(-32005, f"Incompatible content types: {detail}", "CONTENT_TYPE_NOT_SUPPORTED")


def version_not_supported(requested: str) -> A2AError:
    return A2AError(
        -32009,
        f"A2A-Version {requested!r} is not supported (a request without A2A-Version is 0.3); "
        f"send the header A2A-Version: {SUPPORTED_VERSION}",
        "VERSION_NOT_SUPPORTED",
        metadata={"requestedVersion": requested, "supportedVersions": SUPPORTED_VERSION},
    )
