"""Turning validation errors into the one-line reasons services report.

Every service answers bad input with a clear reason (an HTTP 4xx body, a dead-letter
record, a rejected-event entry in a batch ack). :func:`validation_reason` is the one place
that formats a pydantic ``ValidationError`` for that purpose, so the reasons read the same
everywhere.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["validation_reason"]

_MAX_ERRORS = 5
_MAX_CHARS = 1000


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def validation_reason(exc: ValidationError) -> str:
    """Summarise a validation error as a short, single-line, human-readable reason.

    Each error becomes ``field '<location>': <message>`` (or just the message when the error
    concerns the whole object), joined with ``"; "``. Locations use the key as the input
    spelled it (so the camelCase wire name for wire input; a missing field is reported by
    its wire name) and ``[i]`` for list indexes, e.g.
    ``field 'agents[0].agentId': Field required``.
    At most five errors are listed (``(+N more)`` says how many were left out), whitespace
    is collapsed to keep it on one line, and the offending input is not appended (only a
    few messages quote a short value, such as a bad ``traceparent``), so the reason stays
    short enough to log and to return to a client.

    Args:
        exc: The error raised by ``model_validate`` / ``model_validate_json``.

    Returns:
        The reason, e.g. ``"field 'targetAgent': Field required"``.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts: list[str] = []
    for error in errors[:_MAX_ERRORS]:
        message = " ".join(str(error["msg"]).split())
        loc = _format_loc(tuple(error["loc"]))
        parts.append(f"field {loc!r}: {message}" if loc else message)
    if len(errors) > _MAX_ERRORS:
        parts.append(f"(+{len(errors) - _MAX_ERRORS} more)")
    reason = "; ".join(parts) or "invalid message"
    if len(reason) > _MAX_CHARS:
        reason = reason[: _MAX_CHARS - 3] + "..."
    return reason
