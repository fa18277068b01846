"""The pure parts of the Redis persistence measurement: server command lines, percentiles and
the loss count after a kill -9."""

from __future__ import annotations

from pathlib import Path

from loom_load.redis_persistence import CONFIGS, Acks, count_losses, percentile, server_argv


def test_each_config_sets_its_persistence_on_the_command_line() -> None:
    argv = {c.name: server_argv("redis-server", 7000, Path("/d"), c) for c in CONFIGS}
    assert argv["none"][argv["none"].index("--appendonly") + 1] == "no"
    for name, fsync in (("aof-everysec", "everysec"), ("aof-always", "always")):
        assert argv[name][argv[name].index("--appendonly") + 1] == "yes"
        assert argv[name][argv[name].index("--appendfsync") + 1] == fsync
    assert all(
        a[a.index("--bind") + 1] == "127.0.0.1" and a[a.index("--dir") + 1] == "/d" for a in argv.values()
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0 and percentile(values, 50) == 50.0
    assert percentile([], 99) == 0.0


def test_losses_count_writes_behind_what_was_acknowledged() -> None:
    acks = Acks()
    for task_id, step in (("a", 3), ("b", 2), ("c", 0)):
        for s in range(step + 1):
            acks.record(task_id, s, 0.0)
    acks.at.update({"a": 10.0, "b": 11.0, "c": 12.0})
    # a survived whole, b lost its last transition, c's creation is gone
    loss = count_losses(acks, {"a": 3, "b": 1, "c": None}, killed_at=12.5)
    assert (loss.acknowledged, loss.lost_writes, loss.lost_tasks) == (4 + 3 + 1, 2, 1)
    assert loss.window_s == 1.5
    nothing = count_losses(acks, {"a": 3, "b": 2, "c": 0}, killed_at=12.5)
    assert (nothing.lost_writes, nothing.window_s) == (0, 0.0)
