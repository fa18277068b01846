"""Lua scripts (and plain reads) on Redis, auto-pipelined: the calls made in one event-loop
turn share one pipeline (one connection checkout, one write, one read).

redis-py spends most of a command's cost around it (connection checkout, timeouts, response
bookkeeping): on the project's 2-core machines a lone command costs ~150-200 µs of client CPU,
one in a pipeline of 64 about 50 µs. Under load the hot paths run many tasks concurrently, so
their script calls arrive together; this batches them without changing any caller. Each
script still runs atomically on its own; the pipeline is not a transaction and needs none.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

_Call = tuple["Script | None", bytes, "asyncio.Future[Any]"]
"""(the script called, or None for a plain command; the packed command; its reply's future)"""


def _pack(*args: str | int) -> bytes:
    """One command in the Redis protocol (RESP)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Script:
    def __init__(self, batcher: ScriptBatcher, lua: str) -> None:
        self._batcher = batcher
        self.lua = lua
        self.sha = hashlib.sha1(lua.encode()).hexdigest()  # noqa: S324 -- Redis names scripts by SHA-1

    async def __call__(self, keys: list[str], args: list[str]) -> Any:
        return await self._batcher.call(self, keys, args)


class ScriptBatcher:
    def __init__(self, redis: Redis, max_batch: int = 256) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._queue: list[_Call] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()

    def script(self, lua: str) -> Script:
        return Script(self, lua)

    def call(self, script: Script, keys: list[str], args: list[str]) -> asyncio.Future[Any]:
        return self._queued(script, _pack("EVALSHA", script.sha, len(keys), *keys, *args))

    def command(self, *args: str) -> asyncio.Future[Any]:
        """A plain command (a ``GET``) in the same pipeline as the scripts."""
        return self._queued(None, _pack(*args))

    def _queued(self, script: Script | None, packed: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, packed, fut))
        if len(self._queue) >= self._max_batch:
            self._flush_now()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_now)  # after every callback already due in this turn
        return fut

    def _flush_now(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._flush(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # a Redis restarted or flushed: load the scripts, run those calls again
                for lua in {script.lua for i in missing if (script := batch[i][0]) is not None}:
                    await self._redis.script_load(lua)
                again = await self._execute([batch[i] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except BaseException as exc:
            for *_, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        """Send the batch's commands in one write on one pooled connection, read the replies.

        The commands are packed here (a few bytes formats per argument) rather than by
        redis-py's pipeline, whose packing and bookkeeping cost more than the scripts' run.
        An error reply becomes that call's exception; a broken connection fails the batch.
        """
        payload = b"".join(packed for _, packed, _ in batch)
        pool = self._redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(payload, check_health=False)
            results: list[Any] = []
            for _ in batch:
                try:
                    results.append(await conn.read_response())
                except ResponseError as exc:  # this call's error; the connection is fine
                    results.append(exc)
            return results
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)

    async def load(self, *scripts: Script) -> None:
        """Load scripts ahead of their first call (a missing one is loaded on demand anyway)."""
        for script in scripts:
            await self._redis.script_load(script.lua)
