"""The current values of a JetStream key-value bucket, read without a watcher.

nats-py's ``KeyValue.watch`` / ``keys`` (2.16) end their initial values with a marker put when
the consumer reports nothing pending and the client has handled no message yet; the server counts
a value it already pushed as not pending, so that marker can come first while the values are
still on their way, and a read that stops at it finds a bucket empty (measured: a two-key bucket
read as empty 1 time in 500 on an idle nats-server). :func:`latest_values` asks the stream which
keys it holds (the stream info of the bucket's subjects) and reads each one's last message, so
every key written before the call is in the answer.
"""

from __future__ import annotations

import asyncio

from nats.js.api import RawStreamMsg
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

# The KV layout on a stream (NATS ADR-8): one subject per key, deletes and purges as markers.
_STREAM = "KV_{bucket}"
_PREFIX = "$KV.{bucket}."
_OPERATION = "KV-Operation"  # DEL or PURGE on a delete or purge marker
_MARKER_REASON = "Nats-Marker-Reason"  # a marker the server placed (2.11+: expiry, removal)


async def latest_values(
    js: JetStreamContext, bucket: str, keys: str = ">", *, timeout_s: float = 5.0
) -> dict[str, bytes]:
    """The value of every key of ``bucket`` matching ``keys`` (a NATS subject filter over keys),
    in the order they were written; deleted and purged keys are left out.

    Raises ``BucketNotFoundError`` when the bucket does not exist and ``TimeoutError`` when the
    server has not answered within ``timeout_s``."""
    stream, prefix = _STREAM.format(bucket=bucket), _PREFIX.format(bucket=bucket)
    async with asyncio.timeout(timeout_s):
        try:
            info = await js.stream_info(stream, subjects_filter=prefix + keys)
        except NotFoundError as exc:
            raise BucketNotFoundError(description=f"no key-value bucket {bucket!r}") from exc
        subjects = list(info.state.subjects or ())
        last = await asyncio.gather(*(_last_message(js, stream, subject) for subject in subjects))
    values = sorted((msg for msg in last if msg is not None and _is_value(msg)), key=lambda msg: msg.seq or 0)
    return {(msg.subject or "")[len(prefix) :]: msg.data or b"" for msg in values}


async def _last_message(js: JetStreamContext, stream: str, subject: str) -> RawStreamMsg | None:
    try:
        return await js.get_last_msg(stream, subject)
    except NotFoundError:  # removed since the stream listed it (its age limit)
        return None


def _is_value(msg: RawStreamMsg) -> bool:
    headers = msg.headers or {}
    return _OPERATION not in headers and _MARKER_REASON not in headers
