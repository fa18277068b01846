"""The pure parts of what the harness hears: timestamps, hops, WebSocket message shapes, settings."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from loom_load.live import LiveFeed, find_events
from loom_load.observe import Observer, Trace, hop_latencies, parse_time, phase_of
from loom_load.procstat import classify, cpu_percent
from loom_load.pyspy import top_frames
from loom_load.settings import PROFILES, Targets, celery_url_from_redis, resolve_targets
from loom_protocol import subjects


def test_parse_time_accepts_z_and_offsets() -> None:
    expected = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC).timestamp()
    assert parse_time("2026-01-02T03:04:05.123456Z") == pytest.approx(expected)
    assert parse_time("2026-01-02T03:04:05.123456+00:00") == pytest.approx(expected)
    assert parse_time("not a time") is None and parse_time(None) is None


def test_hops_use_only_tasks_with_both_ends() -> None:
    traces = {
        "a": Trace(
            t_submit=0.0,
            ev_submitted=0.002,
            assigned=0.005,
            st_running=0.006,
            st_done=0.007,
            st_final=0.010,
            t_final_recv=0.011,
        ),
        "b": Trace(t_submit=0.0, ev_submitted=0.004),  # nothing else heard
    }
    hops = hop_latencies(traces, ["a", "b", "unknown"])
    assert hops["submit→submitted"].count == 2
    assert hops["submitted→assigned"].count == 1
    assert hops["submitted→assigned"].percentile_ms(50) == pytest.approx(3.0, rel=0.01)
    assert hops["end to end"].percentile_ms(50) == pytest.approx(11.0, rel=0.01)


def test_find_events_in_any_message_shape() -> None:
    event = {"id": "e1", "type": "agent.thought", "time": "2026-01-01T00:00:00Z", "source": "/x"}
    assert list(find_events(event)) == [event]
    assert list(find_events([event, event])) == [event, event]
    assert list(find_events({"type": "events", "events": [event]})) == [event]
    assert list(find_events({"type": "event", "event": event})) == [event]
    assert list(find_events({"data": {"batch": [event]}})) == [event]
    assert list(find_events({"type": "subscribed", "filters": {}})) == []
    assert list(find_events(json.loads("42"))) == []


def test_targets_refuse_non_loopback_hosts() -> None:
    Targets().check_loopback()
    with pytest.raises(ValueError, match="loopback"):
        Targets(nats_url="nats://10.0.0.5:4222").check_loopback()
    with pytest.raises(ValueError, match="loopback"):
        resolve_targets({"database_url": "postgresql://u@db.example.com/loom"}, env={})


def test_targets_from_environment_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the repository's
    env = {"LOOM_NATS_URL": "nats://localhost:4333", "LOOM_REDIS_URL": "redis://127.0.0.1:6380/0"}
    targets = resolve_targets({"dispatcher_url": "http://127.0.0.1:9001"}, env=env)
    assert targets.nats_url == "nats://localhost:4333"
    assert targets.celery_url == "redis://127.0.0.1:6380/5"
    assert targets.dispatcher_url == "http://127.0.0.1:9001"
    assert Targets(database_url="postgresql://u:secret@127.0.0.1/x").redacted()["database_url"] == (
        "postgresql://u:***@127.0.0.1/x"
    )
    assert celery_url_from_redis("redis://127.0.0.1:6379/0", 7) == "redis://127.0.0.1:6379/7"


def test_profiles_are_bounded() -> None:
    for profile in PROFILES.values():
        assert profile.phase_timeout_s > 0 and profile.grace_s > 0
        assert profile.echo_closed_count > 0 and profile.ceiling_seconds > 0
    assert PROFILES["short"].echo_closed_concurrency == 64


def test_process_names_and_cpu_percent() -> None:
    assert classify("/w/.venv/bin/python -m loom_dispatcher") == "dispatcher"
    assert classify("/w/.venv/bin/python -m loom_agent_worker") == "agent-worker"
    assert classify("/usr/sbin/nats-server -a 127.0.0.1 -p 4222 -js") == "nats-server"
    assert classify("python -m celery -A loom_load.celery_app worker") == "celery"
    assert classify("bash") is None
    assert cpu_percent({"a": 1.0}, {"a": 2.0, "b": 0.5}, 2.0) == {"a": 50.0, "b": 25.0}


def test_top_frames_from_collapsed_stacks() -> None:
    collapsed = "main;run;parse 30\nmain;run;publish 60\nmain;idle 10\n"
    top = top_frames(collapsed)
    assert top["samples"] == 100
    assert top["top_self"][0] == ("publish", 60.0)
    assert ("run", 90.0) in top["top_inclusive"]


def test_top_frames_by_package() -> None:
    collapsed = "main (app/x.py);read (redis/conn.py) 3\nmain (app/x.py);write (asyncio/sel.py) 1\n"
    assert top_frames(collapsed)["self_by_package"] == [("redis", 75.0), ("asyncio", 25.0)]


def test_live_feed_latency_is_kept_per_phase_of_the_runs_tasks() -> None:
    assert phase_of("lt0f7c12b1-echo-nats-open-17", "lt0f7c12b1-") == "echo-nats-open"
    feed = LiveFeed("ws://127.0.0.1:8004/ws/events", "lt1-", "/tests/load/lt1")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    sent = at.isoformat().replace("+00:00", "Z")
    feed._take({"time": sent, "taskid": "lt1-echo-nats-open-3"}, at.timestamp() + 0.02)
    feed._take({"time": sent, "taskid": "child", "parenttaskid": "lt1-orchestrator-1"}, at.timestamp() + 0.5)
    feed._take({"time": sent, "taskid": "someone-else"}, at.timestamp() + 9)
    phases = feed.summary()["by_phase"]
    assert set(phases) == {"echo-nats-open", "orchestrator"}
    assert phases["echo-nats-open"]["count"] == 1 and 19 < phases["echo-nats-open"]["p50_ms"] < 21
    assert feed.ours == 2


def test_the_stacks_nats_user_travels_in_every_server_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "LOOM_NATS_URL": "nats://127.0.0.1:4223,nats://127.0.0.1:4224",
        "LOOM_NATS_USER": "admin",
        "LOOM_NATS_PASSWORD": "s3cret",
    }
    targets = resolve_targets({}, env=env)
    assert targets.nats_servers == [
        "nats://admin:s3cret@127.0.0.1:4223",
        "nats://admin:s3cret@127.0.0.1:4224",
    ]
    assert "s3cret" not in str(targets.redacted())


def test_event_sinks_hear_the_phase_of_the_runs_task() -> None:
    observer = Observer("lt1-", "/tests/load/lt1")
    heard: list[tuple[str, str, str | None]] = []
    observer.sinks.append(lambda event_id, at, source, phase: heard.append((event_id, source, phase)))

    class Msg:
        def __init__(self, event: dict[str, str]) -> None:
            self.data = json.dumps({"time": "2026-01-02T03:04:05Z", "source": "/x", **event}).encode()

    for event in (
        {"id": "e1", "taskid": "lt1-echo-nats-closed-7"},
        {"id": "e2", "taskid": "child", "parenttaskid": "lt1-orchestrator-2"},
        {"id": "e3", "source": "/tests/load/lt1"},  # the burst's
    ):
        asyncio.run(observer._on_event(Msg(event)))
    assert heard == [
        ("e1", "/x", "echo-nats-closed"),
        ("e2", "/x", "orchestrator"),
        ("e3", "/tests/load/lt1", None),
    ]


def test_a_hushed_observer_hears_the_final_statuses_only_until_it_listens_again() -> None:
    class Sub:
        def __init__(self, nc: Conn, subject: str) -> None:
            self.nc, self.subject = nc, subject

        async def unsubscribe(self) -> None:
            self.nc.subjects.remove(self.subject)

    class Conn:
        def __init__(self) -> None:
            self.subjects: list[str] = []

        async def subscribe(self, subject: str, **_: object) -> Sub:
            self.subjects.append(subject)
            return Sub(self, subject)

        async def _flush_pending(self, force_flush: bool = False) -> None:  # loom_nats.flushed's first step
            return None

        async def flush(self, timeout: int = 10) -> None:
            return None

    async def run() -> list[list[str]]:
        nc = Conn()
        observer = Observer("lt1-", "/tests/load/lt1")
        await observer.start(nc)
        seen = [sorted(nc.subjects)]
        await observer.hush()
        await observer.hush()  # twice: nothing more to leave
        seen.append(sorted(nc.subjects))
        await observer.listen()
        await observer.listen()  # twice: subscribed once
        seen.append(sorted(nc.subjects))
        await observer.stop()
        seen.append(nc.subjects)
        return seen

    everything, hushed, again, stopped = asyncio.run(run())
    assert hushed == [subjects.TASK_STATUS_ALL]
    assert everything == again and len(everything) == 4
    assert set(everything) >= {subjects.TASK_STATUS_ALL, subjects.TASK_REPORT_ALL, subjects.EVENT_ALL}
    assert stopped == []
