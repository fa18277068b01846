"""CPU per task: the arithmetic on /proc snapshots and the subtotals the report uses (loom_load.procstat)."""

from __future__ import annotations

import pytest
from loom_load import procstat


def test_cpu_seconds_between_snapshots_leave_out_idle_processes() -> None:
    before = {"dispatcher[1]": 10.0, "harness": 1.0, "postgres": 3.0}
    after = {"dispatcher[1]": 12.5, "harness": 1.5, "postgres": 3.0, "client[7]": 0.25}
    assert procstat.cpu_seconds(before, after) == {"dispatcher[1]": 2.5, "harness": 0.5, "client[7]": 0.25}


def test_ms_per_task_divides_by_the_tasks_completed() -> None:
    per = procstat.ms_per_task({"dispatcher[1]": 2.0, "harness": 0.5}, 1000)
    assert per == {"dispatcher[1]": 2.0, "harness": 0.5}
    assert list(per) == ["dispatcher[1]", "harness"]  # busiest first
    assert procstat.ms_per_task({"harness": 1.0}, 0) == {}


def test_percent_of_a_window() -> None:
    window = {"wall_s": 2.0, "tasks": 10, "by_process_s": {"dispatcher[1]": 1.0, "idle": 0.001}}
    assert procstat.percent_of(window) == {"dispatcher[1]": 50.0}
    assert procstat.percent_of({"wall_s": 0}) == {}


def test_the_stack_counts_its_own_brokers_only() -> None:
    brokers = {"nats-server": [10], "redis-server": [20]}
    by = {
        "dispatcher[1]": 1.0,
        "agent-worker[2]": 0.5,
        "nats-server[10]": 0.4,
        "nats-server[99]": 5.0,  # a test's own server elsewhere on the machine
        "redis-server[20]": 0.1,
        "postgres": 0.3,
        "harness": 0.7,
        "client[5]": 0.2,
        "celery": 9.0,
    }
    stack = procstat.subtotal(by, lambda k: procstat.is_stack(k, brokers))
    assert stack == pytest.approx(1.0 + 0.5 + 0.4 + 0.1 + 0.3)
    # pids unknown: every broker process counts
    assert procstat.is_stack("nats-server[99]", {})


def test_a_peer_counts_its_client_workers_and_brokers() -> None:
    brokers = {"nats-server": [10], "redis-server": [20]}
    by = {"harness": 1.0, "taskiq[3]": 0.6, "taskiq[4]": 0.5, "nats-server[10]": 0.2, "redis-server[20]": 0.1}
    by |= {"dispatcher[1]": 0.05, "floor[8]": 3.0}
    total = procstat.subtotal(
        by, lambda k: procstat.is_peer(k, "taskiq", ("nats-server", "redis-server"), brokers)
    )
    assert total == pytest.approx(2.4)
    floor = procstat.subtotal(by, lambda k: procstat.is_peer(k, "floor", ("nats-server",), brokers))
    assert floor == pytest.approx(1.0 + 3.0 + 0.2)


def test_classify_names_the_harness_workers() -> None:
    assert procstat.classify("python -m taskiq worker loom_load.taskiq_app:broker --workers 2") == "taskiq"
    assert procstat.classify("python -m faststream run loom_load.faststream_peer:app") == "faststream"
    assert procstat.classify("python -m loom_load.floor") == "floor"
    assert procstat.classify("python -m loom_load --only floor") is None
    assert procstat.classify("python -m loom_dispatcher") == "dispatcher"
    assert procstat.class_of("client[12]") == "client" and procstat.pid_of("client[12]") == 12
    assert procstat.pid_of("postgres") is None


def test_processes_below_a_root_take_its_name() -> None:
    parents = {100: 1, 101: 100, 102: 101, 200: 1}
    roots = {100: "faststream"}
    assert procstat._root_of(102, parents, roots) == 100
    assert procstat._root_of(100, parents, roots) == 100
    assert procstat._root_of(200, parents, roots) is None


def test_a_snapshot_names_a_started_child_by_its_root() -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        snap = procstat.snapshot({child.pid: "floor"})
        assert f"floor[{child.pid}]" in snap
        assert "harness" in snap
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
