"""``loom_nats.latest_values`` against a real nats-server: every key written before the call is
in its answer, deleted and purged keys are not, and a bucket that does not exist is an error."""

from __future__ import annotations

import pytest
from loom_nats import latest_values
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError

ROUNDS = 2000


async def test_current_values_in_write_order_without_deleted_or_purged_keys(nc: Client) -> None:
    js = nc.jetstream()
    kv = await js.create_key_value(KeyValueConfig(bucket="values"))
    assert await latest_values(js, "values") == {}

    await kv.put("a", b"1")
    await kv.put("task.x.llm.0", b"2")
    await kv.put("task.x.tool.1", b"3")
    await kv.put("task.y.llm.0", b"4")
    await kv.put("a", b"5")
    await kv.put("gone", b"6")
    await kv.delete("gone")
    await kv.put("purged", b"7")
    await kv.purge("purged")

    every = await latest_values(js, "values")
    assert list(every.items()) == [
        ("task.x.llm.0", b"2"),
        ("task.x.tool.1", b"3"),
        ("task.y.llm.0", b"4"),
        ("a", b"5"),
    ]
    assert await latest_values(js, "values", "task.x.>") == {"task.x.llm.0": b"2", "task.x.tool.1": b"3"}
    assert await latest_values(js, "values", "task.z.>") == {}


async def test_keys_just_written_are_all_read_every_time(nc: Client) -> None:
    # nats-py's watcher could end its initial values before they arrived: a two-key bucket read
    # that way came back empty about once in 500 reads
    js = nc.jetstream()
    kv = await js.create_key_value(KeyValueConfig(bucket="pair"))
    await kv.put("first", b"1")
    await kv.put("second", b"2")
    short = [i for i in range(ROUNDS) if len(await latest_values(js, "pair")) != 2]
    assert short == []


async def test_a_missing_bucket_is_an_error(nc: Client) -> None:
    with pytest.raises(BucketNotFoundError):
        await latest_values(nc.jetstream(), "nowhere")
