"""The infrastructure a chaos run owns, so that it can break it: a nats-server with JetStream
(killed and restarted on the same port and store directory), a Redis with an append-only file
(shut down and restarted on the same directory), and a TCP proxy in front of TimescaleDB (stopped
to make the database unreachable without touching the shared server)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from tests.integration.harness import VENV_BIN, Process, free_port, port_open, wait_for


class OwnNats(Process):
    """One nats-server with JetStream and no accounts; ``restart`` keeps its port and store."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        config = log_dir / f"nats-{self.port}.conf"
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\njetstream {{ store_dir: "{log_dir / "jetstream"}" }}\n'
        )
        super().__init__(f"nats-{self.port}", [str(VENV_BIN / "nats-server"), "-c", str(config)], {}, log_dir)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def started(self) -> OwnNats:
        self.start()
        await wait_for(lambda: port_open(self.port), 15, f"nats-server on {self.port}")
        return self


class OwnRedis(Process):
    """``redis-server`` with AOF on, no RDB snapshots, its files in ``log_dir/redis``."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        data = log_dir / "redis"
        data.mkdir(exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
        super().__init__(f"redis-{self.port}", [*argv, "--dir", str(data)], {}, log_dir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def answers(self) -> bool:
        client = aioredis.from_url(self.url, socket_timeout=1)
        try:
            return bool(await client.ping())
        except (OSError, aioredis.RedisError):
            return False
        finally:
            await client.aclose()

    async def started(self) -> OwnRedis:
        self.start()
        await wait_for(self.answers, 15, f"redis-server on {self.port}")
        return self

    async def shutdown_nosave(self) -> None:
        """``SHUTDOWN NOSAVE``: no snapshot; what survives is what the append-only file holds."""
        client = aioredis.from_url(self.url, socket_timeout=2)
        with contextlib.suppress(OSError, aioredis.RedisError):
            await client.execute_command("SHUTDOWN", "NOSAVE")
        with contextlib.suppress(OSError, aioredis.RedisError):
            await client.aclose()
        await wait_for(lambda: not self.alive, 15, "redis-server to exit")


class TcpProxy:
    """A loopback TCP proxy in the test's event loop: ``stop`` closes the listener and cuts every
    open connection (the upstream becomes unreachable to whoever uses the proxy), ``start`` listens
    again on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(database_url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def upstream_of(database_url: str) -> tuple[str, int]:
    parts = urlsplit(database_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432
