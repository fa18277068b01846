"""Submissions per API key: a token bucket per key, in this replica's memory.

Each key may submit ``rate`` tasks a second on average and ``burst`` at once; a submission over
that is refused with 429 and the seconds until a token is back (``Retry-After``). The buckets
live in the process: with N dispatcher replicas behind a balancer a key gets up to N times the
rate. Requests without a key (no keys configured) are not limited. Hand-written rather than a
library: the bucket is a few lines of arithmetic, and a Redis-backed limiter would add a round
trip to every submission.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse
from loom_protocol import ErrorBody
from prometheus_client import Counter
from starlette.requests import HTTPConnection

SUBMISSIONS_LIMITED = Counter(
    "loom_dispatcher_submissions_rate_limited_total", "Submissions refused (429) by the per-key rate limit"
)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class SubmitRateLimit:
    rate: float  # tokens a second per key; 0: no limit
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict, init=False)

    def take(self, key_id: str) -> float | None:
        """Take one token of ``key_id``'s bucket: None when allowed, else the seconds to wait."""
        if self.rate <= 0:
            return None
        now = self.clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """The Retry-After value (whole seconds, at least 1) for a wait of ``wait_s``."""
    return str(max(1, math.ceil(wait_s)))


def refused_submission(conn: HTTPConnection, limit: SubmitRateLimit) -> JSONResponse | None:
    """429 with ``Retry-After`` when the caller's key has no submission left, else None."""
    record = conn.scope.get("state", {}).get("api_key")
    if record is None:  # no key configured: nothing to limit by
        return None
    wait_s = limit.take(record.id)
    if wait_s is None:
        return None
    SUBMISSIONS_LIMITED.inc()
    message = f"the API key {record.id} submitted more than {limit.rate:g} tasks a second; retry later"
    body = ErrorBody.of(429, message, code="rate_limited", rate=limit.rate, burst=limit.burst)
    return JSONResponse(body.to_wire(), 429, headers={"retry-after": retry_after(wait_s)})
