"""A whole phase against a fake Loom: every task is accounted for, lost ones included."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
from loom_load.live import LiveFeed, paced_events
from loom_load.loom import LoomClient, PhaseSpec, rest_session, run_phase
from loom_load.observe import Observer, parse_time


@dataclass
class FakeMsg:
    subject: str
    data: bytes


class FakeLoom(LoomClient):
    """Answers over the observer as the dispatcher would; some tasks die, some never end."""

    async def submit_nats(self, task_id: str, agent: str, params: dict[str, Any]) -> None:
        n = params["n"]
        if n % 10 == 9:
            raise TimeoutError("nats: timeout")  # the submission itself failed
        if n % 10 == 8:
            return  # accepted, then never heard of again
        status = "dead" if n % 10 == 7 else "completed"
        asyncio.get_running_loop().call_later(0.01, self._announce, task_id, status)

    def _announce(self, task_id: str, status: str) -> None:
        report, announced = f"loom.task.report.w1.{task_id}", f"loom.task.status.{task_id}"
        for subject, body in (
            (report, {"taskId": task_id, "status": "running", "at": "2026-01-01T00:00:00.001Z"}),
            (announced, {"taskId": task_id, "status": "running", "at": "2026-01-01T00:00:00.0015Z"}),
            (report, {"taskId": task_id, "status": status, "at": "2026-01-01T00:00:00.002Z"}),
            (
                announced,
                {"taskId": task_id, "status": status, "at": "2026-01-01T00:00:00.003Z", "final": True},
            ),
        ):
            msg = FakeMsg(subject, json.dumps(body).encode())
            asyncio.ensure_future(self.observer._on_status(msg))

    async def lookup(self, task_id: str) -> str | None:
        return "running"


async def _run(mode: str) -> dict[str, Any]:
    observer = Observer("lttest-", "/tests/load/test")
    async with httpx.AsyncClient() as http, rest_session("http://127.0.0.1:1", {}) as rest:
        client = FakeLoom(js=None, http=http, observer=observer, prefix="lttest-", rest=rest)
        spec = PhaseSpec(
            "echo", "echo", "echo", "nats", mode, 50, concurrency=8, rate=500.0, task_timeout_s=0.2
        )
        done: list[int] = []
        return await run_phase(spec, client, phase_timeout_s=10, grace_s=0.3, progress=done.append)


def test_closed_loop_accounts_for_every_task() -> None:
    summary = asyncio.run(_run("closed"))
    acc = summary["accounting"]
    assert acc["total"] == 50
    assert acc["completed"] == 35 and acc["dead"] == 5 and acc["rejected"] == 5 and acc["missing"] == 5
    assert acc["missing_by_status"] == {"running": 5}
    assert acc["submit_errors"] == {"TimeoutError: nats: timeout": 5}
    assert summary["latency"]["count"] == 35
    assert summary["throughput"] and summary["throughput"] > 0
    assert "running→done" in summary["hops"]


def test_open_loop_accounts_for_every_task() -> None:
    summary = asyncio.run(_run("open"))
    acc = summary["accounting"]
    assert (acc["completed"], acc["dead"], acc["rejected"], acc["missing"]) == (35, 5, 5, 5)
    assert summary["target_rate"] == 500.0


def test_live_feed_takes_only_this_runs_events() -> None:
    feed = LiveFeed("ws://127.0.0.1:1/ws/events", "lttest-", "/tests/load/test")
    feed._take(
        {"id": "1", "type": "t", "time": "2026-01-01T00:00:00Z", "taskid": "lttest-a-1"}, 1767225600.05
    )
    feed._take(
        {"id": "2", "type": "t", "time": "2026-01-01T00:00:00Z", "taskid": "someone-else"}, 1767225600.05
    )
    feed._take(
        {"id": "3", "type": "t", "time": "2026-01-01T00:00:00Z", "source": "/tests/load/test"}, 1767225601.0
    )
    paced = {"id": "4", "type": "t", "time": "2026-01-01T00:00:00Z", "source": "/tests/load/test/live"}
    feed._take(paced, 1767225600.002)
    summary = feed.summary()
    assert summary["events_of_this_run"] == 1
    assert summary["latency"]["p50_ms"] == 50.0 or abs(summary["latency"]["p50_ms"] - 50.0) < 0.1
    assert summary["events"] == 4  # the ingest burst's (id 3) is neither the run's nor the figure's
    assert summary["paced_latency"]["count"] == 1 and abs(summary["paced_latency"]["p50_ms"] - 2.0) < 0.1
    assert "na" not in summary


def test_paced_events_keep_to_their_rate_and_are_timestamped_as_sent() -> None:
    sent: list[tuple[float, dict[str, Any]]] = []

    class Nats:
        async def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
            event = json.loads(body)
            assert subject == "loom.event.ingest.bench.live" and headers["Nats-Msg-Id"] == event["id"]
            sent.append((time.time(), event))

        async def flush(self, timeout: float) -> None:
            return None

    started = time.perf_counter()
    out = asyncio.run(paced_events(Nats(), "/tests/load/test/live", rate=500.0, seconds=0.2))
    elapsed = time.perf_counter() - started
    assert out["events"] == len(sent) == 100 and out["target_rate"] == 500.0
    assert elapsed >= 99 / 500  # never ahead of the schedule: the 100th is due at 0.198 s
    assert [e["data"]["i"] for _, e in sent] == list(range(100))
    assert all(e["source"] == "/tests/load/test/live" for _, e in sent)
    stamped = [parse_time(e["time"]) for _, e in sent]
    assert all(t is not None and 0 <= at - t < 0.05 for (at, _), t in zip(sent, stamped, strict=True))


def test_live_feed_without_server_is_na() -> None:
    async def go() -> dict[str, Any]:
        feed = LiveFeed("ws://127.0.0.1:1/ws/events", "lttest-", "/x")
        await feed.start(connect_timeout=1.0)
        await feed.stop()
        return feed.summary()

    summary = asyncio.run(go())
    assert summary["connected"] is False
    assert summary["na"].startswith("cannot connect to ws://127.0.0.1:1/ws/events")


def test_the_paced_tail_is_awaited_until_heard_or_the_deadline() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        feed = LiveFeed("ws://127.0.0.1:1/ws/events", "lttest-", "/tests/load/test")
        not_listening = await feed.paced_heard(1, timeout_s=5.0)  # no connection: no wait

        async def open_connection() -> None:
            await asyncio.Event().wait()

        feed._task = asyncio.create_task(open_connection())  # a connection that stays open
        event = {"id": "p", "type": "t", "time": "2026-01-01T00:00:00Z", "source": "/tests/load/test/live"}

        async def arrive() -> None:
            for _ in range(2):
                await asyncio.sleep(0.01)
                feed._take(event, 1767225600.001)

        arriving = asyncio.create_task(arrive())
        heard = await feed.paced_heard(2, timeout_s=5.0)
        await arriving
        short = await feed.paced_heard(3, timeout_s=0.05)  # the third never comes
        await feed.stop()
        return not_listening, heard, short

    assert asyncio.run(scenario()) == (False, True, False)


def test_a_live_phases_tail_is_awaited_until_the_feed_brought_what_nats_did() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        feed = LiveFeed("ws://127.0.0.1:1/ws/events", "lttest-", "/tests/load/test")
        sent = {"echo-nats-open": 0}

        async def open_connection() -> None:
            await asyncio.Event().wait()

        feed._task = asyncio.create_task(open_connection())  # a connection that stays open
        nothing_sent = await feed.phase_heard("echo-nats-open", lambda: sent["echo-nats-open"], 5.0)

        async def arrive() -> None:
            for n in range(3):
                sent["echo-nats-open"] += 1  # heard on NATS first, then on the feed
                await asyncio.sleep(0.01)
                event = {"id": str(n), "time": "2026-01-01T00:00:00Z", "taskid": f"lttest-echo-nats-open-{n}"}
                feed._take(event, 1767225600.001)

        arriving = asyncio.create_task(arrive())
        await asyncio.sleep(0)  # the first is on NATS, not yet on the feed
        heard = await feed.phase_heard("echo-nats-open", lambda: sent["echo-nats-open"], 5.0)
        await arriving
        sent["echo-nats-open"] += 1  # one the feed never brings
        short = await feed.phase_heard("echo-nats-open", lambda: sent["echo-nats-open"], 0.05)
        await feed.stop()
        return nothing_sent and heard, short, feed.heard_of("echo-nats-open")

    assert asyncio.run(scenario()) == (True, False, 3)
