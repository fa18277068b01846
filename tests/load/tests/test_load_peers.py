"""The peers' workloads account for every task (loom_load.peer_loop), and the I/O task's verdict
says when the tasks did not wait (loom_load.io_bench)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from loom_load.io_bench import ideal_rate, io_verdict
from loom_load.peer_loop import TaskFailed, closed_loop, wait_ready
from loom_load.reply_bench import ReplyClient, names


async def _submit(i: int) -> int:
    if i % 10 == 9:
        raise ConnectionError("no responders")
    return i


async def _wait(handle: int, timeout: float) -> None:
    if handle % 10 == 8:
        raise TimeoutError
    if handle % 10 == 7:
        raise TaskFailed("boom")
    await asyncio.sleep(0)


def _run(count: int, concurrency: int) -> dict[str, Any]:
    done: list[int] = []
    out = asyncio.run(
        closed_loop(
            _submit,
            _wait,
            system="fake",
            count=count,
            concurrency=concurrency,
            timeout_s=10,
            task_timeout_s=0.5,
            progress=done.append,
        )
    )
    assert done and done[-1] == out["accounting"]["completed"]
    return out


@pytest.mark.parametrize("concurrency", [1, 8])
def test_closed_loop_puts_every_task_in_one_bucket(concurrency: int) -> None:
    out = _run(50, concurrency)
    acc = out["accounting"]
    assert (acc["completed"], acc["failed"], acc["rejected"], acc["missing"]) == (35, 5, 5, 5)
    assert acc["total"] == out["submitted"] == 50
    assert acc["submit_errors"] == {"ConnectionError: no responders": 5}
    assert list(acc["missing_by_status"].values()) == [5]
    assert out["latency"]["count"] == 35
    assert out["mode"] == ("sequential" if concurrency == 1 else "closed")
    assert out["concurrency"] == concurrency


def test_wait_ready_stops_when_the_worker_exits() -> None:
    async def never() -> None:
        raise TimeoutError

    with pytest.raises(RuntimeError, match="exited"):
        asyncio.run(wait_ready(never, lambda: False, timeout_s=5))


def test_reply_client_matches_replies_by_subject_and_counts_strays() -> None:
    class Msg:
        def __init__(self, subject: str, data: bytes) -> None:
            self.subject, self.data = subject, data

    async def go() -> tuple[bytes, int]:
        client = ReplyClient(_FakeNats(), "loomload.floor.x", "_INBOX.loomload.floor.x")
        handle = await client.submit(b"{}")
        await client._on_reply(Msg(f"_INBOX.loomload.floor.x.{handle[0]}", b"pong"))
        await client._on_reply(Msg("_INBOX.loomload.floor.x.999", b"late"))
        await client.wait(handle, 1.0)
        return handle[1].result(), client.stray_replies

    assert asyncio.run(go()) == (b"pong", 1)
    assert names("floor", "ab12")["stream"] == "LOOMLOAD_FLOOR_ab12"


class _FakeNats:
    def jetstream(self) -> Any:
        return self

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_io_verdict_ratio_to_the_ideal() -> None:
    assert ideal_rate(64, 0.1) == pytest.approx(640)
    verdict = io_verdict(576.0, 104.0, 64, 0.1)
    assert verdict["ratio_to_ideal"] == pytest.approx(0.9)
    assert verdict["waited"] is True and verdict["note"] == ""


def test_io_verdict_says_when_the_tasks_did_not_wait() -> None:
    verdict = io_verdict(1800.0, 30.0, 64, 0.1)  # a worker that ignores delayS answers at once
    assert verdict["waited"] is False
    assert "30.0 ms" in verdict["note"] and "did not wait" in verdict["note"]
    assert verdict["ratio_to_ideal"] == pytest.approx(1800 / 640, rel=0.01)
    assert io_verdict(None, None, 64, 0.1)["waited"] is None
