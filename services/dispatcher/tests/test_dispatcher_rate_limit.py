"""The per-key submission limit: a token bucket per key (a fake clock)."""

from __future__ import annotations

from loom_dispatcher.rate_limit import SubmitRateLimit, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_its_rate_and_other_keys_their_own() -> None:
    clock = Clock()
    limit = SubmitRateLimit(rate=2.0, burst=3, clock=clock)
    assert [limit.take("a") for _ in range(3)] == [None, None, None]
    wait = limit.take("a")
    assert wait is not None and abs(wait - 0.5) < 1e-9  # one token back in half a second
    assert limit.take("b") is None  # another key is not held back
    clock.now += 0.5
    assert limit.take("a") is None and limit.take("a") is not None
    clock.now += 60  # refilled to the burst, not beyond
    assert [limit.take("a") for _ in range(4)].count(None) == 3


def test_no_rate_means_no_limit() -> None:
    limit = SubmitRateLimit(rate=0.0, burst=1)
    assert all(limit.take("a") is None for _ in range(10_000))


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after(w) for w in (0.01, 1.0, 1.2)] == ["1", "1", "2"]
