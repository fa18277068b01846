"""The taskiq peer's app: one no-op task on a JetStream pull broker with results in Redis.

taskiq 0.13 with taskiq-nats's ``PullBasedJetStreamBroker`` (a stream and a durable consumer of
the run's own, named from ``LOOM_LOAD_TASKIQ_TOKEN``) and taskiq-redis's
``RedisAsyncResultBackend`` (Redis database 5 like the Celery baseline, every result key
expiring, deleted when read). The worker (``taskiq worker loom_load.taskiq_app:broker``, started
by the harness) takes the module-level :data:`broker`; the client builds its own with
:func:`make_broker` from the same names.
"""

from __future__ import annotations

import os
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from taskiq import AsyncTaskiqDecoratedTask
from taskiq_nats import PullBasedJetStreamBroker
from taskiq_redis import RedisAsyncResultBackend

TASK_NAME = "loom_load.noop"
RESULT_TTL_S = 600
FETCH_BATCH = 16  # messages per pull request (taskiq-nats's default is 1: a request per task)
FETCH_TIMEOUT_S = 1.0


def names(token: str) -> dict[str, str]:
    """The stream, subject and durable consumer of one run."""
    return {
        "stream": f"LOOMLOAD_TASKIQ_{token}",
        "subject": f"loomload.taskiq.{token}",
        "durable": f"loomload-taskiq-{token}",
    }


async def noop(payload: Any) -> Any:
    """Return the payload: the same no-op as Loom's echo agent."""
    return payload


def make_broker(
    nats_servers: list[str], redis_url: str, token: str, redis_pool: int = 128
) -> tuple[PullBasedJetStreamBroker, AsyncTaskiqDecoratedTask[[Any], Any]]:
    """A broker for one run's stream and durable, with the Redis result backend, and its task."""
    named = names(token)
    backend: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(
        redis_url,
        keep_results=False,
        result_ex_time=RESULT_TTL_S,
        max_connection_pool_size=redis_pool,
    )
    broker = PullBasedJetStreamBroker(
        nats_servers,
        subject=named["subject"],
        stream_name=named["stream"],
        durable=named["durable"],
        stream_config=StreamConfig(
            name=named["stream"],
            subjects=[named["subject"]],
            storage=StorageType.FILE,
            max_age=RESULT_TTL_S,
        ),
        consumer_config=ConsumerConfig(
            durable_name=named["durable"], ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000
        ),
        pull_consume_batch=FETCH_BATCH,
        pull_consume_timeout=FETCH_TIMEOUT_S,
        name=f"loom-load-taskiq-{token}",
    ).with_result_backend(backend)
    task: AsyncTaskiqDecoratedTask[[Any], Any] = broker.task(task_name=TASK_NAME)(noop)
    return broker, task


broker, noop_task = make_broker(
    [u for u in os.environ.get("LOOM_LOAD_TASKIQ_NATS", "nats://127.0.0.1:4222").split(",") if u],
    os.environ.get("LOOM_LOAD_TASKIQ_REDIS", "redis://127.0.0.1:6379/5"),
    os.environ.get("LOOM_LOAD_TASKIQ_TOKEN", "default"),
)
