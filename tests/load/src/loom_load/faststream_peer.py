"""The FastStream peer: a bare FastStream 0.7 app with one JetStream pull subscriber.

Its per-message async handler publishes the payload back over core NATS to the reply subject
the client named in a header, then FastStream acks the message: what FastStream itself costs
on the path the nats-py floor (:mod:`loom_load.floor`) takes without it. The harness starts it
with ``faststream run loom_load.faststream_peer:app --workers <cores>`` against the stream and
durable consumer it created for the run; the broker logs its two lines per message at DEBUG, below
the log's INFO level, so they cost a level check and no output. The client side is
:mod:`loom_load.reply_bench`.
"""

from __future__ import annotations

import logging
import os
import sys

from faststream import FastStream
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

from .reply_bench import ENV_KEYS, REPLY_HEADER

FETCH_BATCH = 64


def worker_commands(workers: int) -> list[list[str]]:
    """One ``faststream run`` supervisor with ``workers`` processes."""
    command = [sys.executable, "-m", "faststream", "run", "loom_load.faststream_peer:app"]
    return [[*command, "--workers", str(workers)]]


def _setting(key: str, default: str) -> str:
    return os.environ.get(key) or default


_servers = [u for u in _setting(ENV_KEYS[0], "nats://127.0.0.1:4222").split(",") if u]
_stream = _setting(ENV_KEYS[1], "LOOMLOAD_FASTSTREAM")
_subject = _setting(ENV_KEYS[2], "loomload.faststream")
_durable = _setting(ENV_KEYS[3], "loomload-faststream")

broker = NatsBroker(_servers, log_level=logging.DEBUG)
app = FastStream(broker)


@broker.subscriber(
    _subject,
    stream=JStream(_stream, declare=False),
    durable=_durable,
    pull_sub=PullSub(batch_size=FETCH_BATCH, timeout=1.0),
)
async def echo(message: NatsMessage) -> None:
    reply = message.headers.get(REPLY_HEADER)
    if reply:
        await broker.publish(message.body, reply)
