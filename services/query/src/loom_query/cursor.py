"""Keyset cursors: an opaque, URL-safe base64 of (time, id, order) of the last row of a page."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Literal

Order = Literal["asc", "desc"]


class CursorError(ValueError):
    """The cursor is not one this service issued (or was issued for the other order)."""


def encode_cursor(time: datetime, event_id: str, order: Order) -> str:
    raw = json.dumps({"t": time.isoformat(), "i": event_id, "o": order}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, order: Order) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        time = datetime.fromisoformat(payload["t"])
        event_id = payload["i"]
        issued_for = payload["o"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise CursorError("cursor is not valid: pass back the next_cursor of a previous page") from exc
    if not isinstance(event_id, str) or time.tzinfo is None:
        raise CursorError("cursor is not valid: pass back the next_cursor of a previous page")
    if issued_for != order:
        raise CursorError(f"cursor was issued for order={issued_for}; this request asks for order={order}")
    return time, event_id
