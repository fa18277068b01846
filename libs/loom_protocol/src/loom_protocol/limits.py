"""The one place for the size and content limits every Loom edge enforces.

A message the broker accepted must never become too large to forward: the dispatcher turns a
submission into an assignment (the same task plus its status, attempt, instance, times and
trace) and publishes it with headers, all of which count against NATS's ``max_payload``. So a
task's serialised form is held to :data:`MAX_TASK_BYTES`, which leaves room for both.

Strings must be storable everywhere they travel: JSON (no lone UTF-16 surrogates) and
PostgreSQL text/jsonb (no NUL). Numbers must be finite (JSON has no NaN or Infinity).
:func:`check_json_value` walks a JSON value once and says what is wrong with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ENVELOPE_RESERVE_BYTES",
    "HEADERS_RESERVE_BYTES",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_TASK_BYTES",
    "NATS_MAX_PAYLOAD",
    "bad_text",
    "check_json_value",
    "headers_size",
    "wire_size",
]

NATS_MAX_PAYLOAD = 1_048_576
"""NATS's default ``max_payload`` (1 MiB): headers plus body of one message."""

HEADERS_RESERVE_BYTES = 4_096
"""Room kept for the headers a service adds when it forwards a message (msg id, trace, ...)."""

ENVELOPE_RESERVE_BYTES = 12_288
"""Room kept for the fields the dispatcher adds to a submitted task before assigning it."""

MAX_TASK_BYTES = NATS_MAX_PAYLOAD - HEADERS_RESERVE_BYTES - ENVELOPE_RESERVE_BYTES
"""The largest serialised task (submission) accepted: forwarding it can never exceed max_payload."""

MAX_BODY_BYTES = 2 * NATS_MAX_PAYLOAD
"""The largest HTTP request body a Loom API reads (a task of :data:`MAX_TASK_BYTES` with room
for whitespace and escapes); larger ones are refused with 413 while they are read."""

MAX_JSON_DEPTH = 64
"""The deepest nesting of objects and arrays accepted in a free-form JSON value."""

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def bad_text(value: str) -> str | None:
    """Say what makes a string unstorable, or None when it is fine.

    Args:
        value: Any string.

    Returns:
        ``"a NUL character"`` or ``"a lone surrogate"`` for the first offending character, else None.
    """
    match = _BAD_TEXT.search(value)
    if match is None:
        return None
    return "a NUL character" if match.group() == "\x00" else "a lone surrogate"


def _path(parts: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".") or "(root)"


def check_json_value(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Find the first thing in a JSON value that Loom refuses to carry, or None.

    Refused: strings (keys or values) with a NUL or a lone surrogate, floats that are NaN or
    infinite, and nesting deeper than ``max_depth``.

    Args:
        value: A value as parsed from JSON (dicts, lists, strings, numbers, bools, None).
        max_depth: The deepest nesting accepted.

    Returns:
        A reason naming where the problem is (e.g. ``"at items[3]: NaN is not a JSON number"``),
        or None when the value is fine.
    """
    stack: list[tuple[Any, list[str | int], int]] = [(value, [], 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if (what := bad_text(item)) is not None:
                return f"at {_path(where)}: the string contains {what}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"at {_path(where)}: {item!r} is not a JSON number (numbers must be finite)"
        elif isinstance(item, Mapping | list | tuple):
            if depth >= max_depth:
                return f"at {_path(where)}: nested deeper than {max_depth} levels"
            if isinstance(item, Mapping):
                for key, child in item.items():
                    if isinstance(key, str) and (what := bad_text(key)) is not None:
                        return f"at {_path(where)}: a key contains {what}"
                    stack.append((child, [*where, str(key)], depth + 1))
            else:
                stack.extend((child, [*where, i], depth + 1) for i, child in enumerate(item))
    return None


def headers_size(headers: Mapping[str, str] | None) -> int:
    """The bytes NATS counts for a message's headers (``NATS/1.0`` block), 0 for none.

    Args:
        headers: The headers as published.

    Returns:
        Their encoded size, as the server adds it to the body against ``max_payload``.
    """
    if not headers:
        return 0
    size = len(b"NATS/1.0\r\n") + 2
    for key, val in headers.items():
        size += len(key.encode()) + 2 + len(str(val).encode()) + 2
    return size


def wire_size(body: bytes, headers: Mapping[str, str] | None = None) -> int:
    """The size NATS checks against ``max_payload``: headers plus body.

    Args:
        body: The payload.
        headers: The headers, if any.

    Returns:
        ``headers_size(headers) + len(body)``.
    """
    return headers_size(headers) + len(body)
