"""Real processes for integration tests: a nats-server of the test's own and Loom services,
each on a free port, stopped in ``finally`` by the fixtures that start them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def wait_for(
    predicate: Callable[[], Awaitable[Any]] | Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {last!r})")


class Process:
    """One child process with its log file; ``stop`` is safe to call twice."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class NatsServer(Process):
    def __init__(self, log_dir: Path, store_dir: Path) -> None:
        self.port = free_port()
        argv = [
            str(VENV_BIN / "nats-server"),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(store_dir),
        ]
        super().__init__(f"nats-{self.port}", argv, dict(os.environ), log_dir)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def started(self) -> NatsServer:
        self.start()
        await wait_for(lambda: port_open(self.port), 10, f"nats-server on {self.port}")
        return self


class Service(Process):
    """A Loom service (``python -m loom_<module>``) on a free HTTP port."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        full_env = {**os.environ, **env, "LOOM_HTTP_PORT": str(self.port), "LOOM_HTTP_HOST": "127.0.0.1"}
        super().__init__(name, [sys.executable, "-m", module], full_env, log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 60.0) -> None:
        async def is_ready() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.log_tail()}")
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            await wait_for(is_ready, timeout, f"{self.name} /readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log ---\n{self.log_tail()}") from None

    async def started(self, timeout: float = 60.0) -> Service:
        self.start()
        await self.ready(timeout)
        return self

    async def restart(self) -> None:
        self.stop()
        self.start()
        await self.ready()


@contextlib.asynccontextmanager
async def running(*procs: Process):  # type: ignore[no-untyped-def]
    try:
        yield procs
    finally:
        for p in reversed(procs):
            p.stop()


class PrometheusServer(Process):
    """Debian's prometheus with the project's scrape config made local (scripts/prometheus_local.py)."""

    def __init__(self, log_dir: Path, targets: dict[str, list[str]]) -> None:
        import yaml

        from scripts.prometheus_local import SHARED, localize

        self.port = free_port()
        config = localize(yaml.safe_load(SHARED.read_text()), targets, "1s", self.port)
        config_path = log_dir / f"prometheus-{self.port}.yml"
        config_path.write_text(yaml.safe_dump(config))
        argv = [
            "prometheus",
            f"--config.file={config_path}",
            f"--storage.tsdb.path={log_dir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        super().__init__(f"prometheus-{self.port}", argv, dict(os.environ), log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as client:
            body = (await client.get(f"{self.url}/api/v1/query", params={"query": promql})).json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])
