"""What the integration and component tiers run on: one nats-server per session with an account
per test, Loom services as processes (``Service``) or in the test's event loop (``LocalService``),
each on a free port and stopped in ``finally`` by the fixtures that start them."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import typing
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import nats
import redis.asyncio as aioredis
import uvicorn
from asgi_lifespan import LifespanManager
from dotenv import dotenv_values
from loom_protocol.nats_auth import Role, server_users

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, what: str = "the test's HTTP server") -> AsyncIterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port for the block; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started or task.done(), 10, f"{what} to start")
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        sock.close()


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
    """One nats-server with JetStream for a whole test session; each test takes an account of its
    own (``await server.account()``), so every test sees the real subjects, stream and durable
    names with nothing left over from another test: accounts share no subjects and no JetStream
    assets. A new account is a config reload (SIGHUP to this process), about 15 ms."""

    def __init__(self, log_dir: Path, store_dir: Path) -> None:
        self.port = free_port()
        self.store_dir = store_dir
        self.config_path = log_dir / f"nats-{self.port}.conf"
        self.accounts = 0
        self._write_config()
        argv = [str(VENV_BIN / "nats-server"), "-c", str(self.config_path)]
        super().__init__(f"nats-{self.port}", argv, dict(os.environ), log_dir)

    def _write_config(self) -> None:
        # each account: its admin (user and password t<i>) and one user per service role
        # (t<i>-dispatcher, ...: the protocol's permissions, loom_protocol.nats_auth)
        accounts = "\n".join(
            f"  t{i}: {{ jetstream: enabled, users: {account_users(f't{i}')} }}" for i in range(self.accounts)
        )
        self.config_path.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{ store_dir: "{self.store_dir}" }}\n'
            f"accounts {{\n{accounts}\n}}\n"
        )

    async def started(self) -> NatsServer:
        self.start()
        await wait_for(lambda: port_open(self.port), 10, f"nats-server on {self.port}")
        return self

    async def account(self) -> str:
        """A new, empty account; returns the URL (with its credentials) that connects to it."""
        self.accounts += 1
        name = f"t{self.accounts - 1}"
        url = f"nats://{name}:{name}@127.0.0.1:{self.port}"
        self._write_config()
        self.signal(signal.SIGHUP)

        async def accepted() -> bool:
            with contextlib.suppress(Exception):
                nc = await nats.connect(
                    url, allow_reconnect=False, connect_timeout=1, max_reconnect_attempts=0, error_cb=_quiet
                )
                await nc.close()
                return True
            return False

        await wait_for(accepted, 10, f"nats-server to reload with account {name}")
        return url


async def _quiet(_: Exception) -> None:
    pass


ROLE_OF_MODULE = {
    "loom_dispatcher": Role.DISPATCHER,
    "loom_registry": Role.REGISTRY,
    "loom_agent_worker": Role.WORKER,
    "loom_ingest": Role.INGEST,
    "loom_query": Role.QUERY,
    "loom_replay": Role.REPLAY,
}
"""The NATS role each service connects as in the tests, as in every deployment."""


def account_users(account: str) -> str:
    """The users of a test account: ``account`` itself as admin, ``<account>-<role>`` for each
    other role; every password is the account's name."""
    users = [(account, Role.ADMIN, account)]
    users += [(f"{account}-{role.value}", role, account) for role in Role if role is not Role.ADMIN]
    return server_users(users)


def role_credentials(admin_url: str, role: Role) -> tuple[str, dict[str, str]]:
    """The URL (without credentials) and the ``LOOM_NATS_USER``/``LOOM_NATS_PASSWORD`` settings
    of ``role``'s user in the test account whose admin URL is ``admin_url``."""
    parts = urlsplit(admin_url)
    account = parts.username or ""
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, {"LOOM_NATS_USER": f"{account}-{role.value}", "LOOM_NATS_PASSWORD": account}


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


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: several servers share the test process, and pytest
    keeps its own SIGINT/SIGTERM handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LocalService:
    """A Loom service in the test's own process and event loop: ``create_app(settings)`` with its
    lifespan running (asgi-lifespan) and uvicorn serving the app on a loopback socket of its own.

    A socket rather than httpx's ASGITransport: the WebSocket endpoints and the replay service's
    calls to the dispatcher need one, and with it both tiers' tests talk to services by URL.
    ``env`` uses the services' environment names (``LOOM_TASK_TIMEOUT_S``); ``shared`` holds the
    stack-wide ones (NATS, Redis, database), passed only to services that have such a setting.
    """

    def __init__(self, name: str, module: str, env: dict[str, str], shared: dict[str, str]) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        create_app = importlib.import_module(f"{module}.app").create_app
        settings_cls = _settings_class(create_app)
        fields = set(settings_cls.model_fields)
        unknown = sorted(k for k in env if _field(k) not in fields)
        if unknown:
            raise ValueError(f"{module} has no settings {unknown}")
        values: dict[str, object] = {
            _field(k): v for k, v in {**shared, **env}.items() if _field(k) in fields
        }
        values.update(
            {k: v for k, v in (("http_host", "127.0.0.1"), ("http_port", self.port)) if k in fields}
        )
        try:
            self.app = create_app(settings_cls(**values))
        except BaseException:
            self.sock.close()
            raise
        self._lifespan: LifespanManager | None = None
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 60.0) -> None:
        """Run the lifespan's start-up and serve, without waiting for /readyz."""
        self._lifespan = LifespanManager(self.app, startup_timeout=timeout, shutdown_timeout=60)
        await self._lifespan.__aenter__()
        server = self._server = _Server(
            uvicorn.Config(
                self._lifespan.app,
                lifespan="off",
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )
        serving = self._serving = asyncio.create_task(server.serve([self.sock]), name=f"serve-{self.name}")
        await wait_for(lambda: server.started or serving.done(), 10, f"{self.name} to listen")
        if serving.done():
            serving.result()
            raise AssertionError(f"{self.name} stopped serving at once")

    async def ready(self, timeout: float = 60.0) -> None:
        async def is_ready() -> bool:
            if self._serving is None or self._serving.done():
                raise AssertionError(f"{self.name} is not serving")
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    return (await client.get(f"{self.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(is_ready, timeout, f"{self.name} /readyz")

    async def started(self, timeout: float = 60.0) -> LocalService:
        await self.start(timeout)
        await self.ready(timeout)
        return self

    async def stop(self) -> None:
        """Stop serving, then run the lifespan's shutdown; safe to call twice."""
        serving, self._serving = self._serving, None
        lifespan, self._lifespan = self._lifespan, None
        try:
            if serving is not None and self._server is not None:
                self._server.should_exit = True
                try:
                    await asyncio.wait_for(asyncio.shield(serving), 30)
                except TimeoutError:
                    serving.cancel()
                    raise AssertionError(f"{self.name}: uvicorn did not stop within 30 s") from None
        finally:
            try:
                if lifespan is not None:  # raises if the shutdown fails or outlasts its timeout
                    watchdog = asyncio.get_running_loop().call_later(
                        SHUTDOWN_REPORT_S, _report_stuck_tasks, self.name
                    )
                    try:
                        await lifespan.__aexit__(None, None, None)
                    finally:
                        watchdog.cancel()
            finally:
                self.sock.close()


SHUTDOWN_REPORT_S = 20.0


def _report_stuck_tasks(name: str) -> None:
    """A lifespan shutdown that takes this long is a bug: say where every task waits."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=out)
    print(f"{name}: lifespan shutdown still running after {SHUTDOWN_REPORT_S:g} s; tasks:\n{out.getvalue()}")


def _field(env_name: str) -> str:
    return env_name.removeprefix("LOOM_").lower()


def _settings_class(create_app: Callable[..., Any]) -> Any:
    """The pydantic-settings class ``create_app(settings)`` takes (from its annotation)."""
    hint = typing.get_type_hints(create_app)["settings"]
    return next((a for a in typing.get_args(hint) if a is not type(None)), hint)


AnyService = Service | LocalService


class Stack:
    """The services of one test, on the test's own NATS account and Redis key prefix.

    Services run in the test's process (``LocalService``) unless ``process=True``: a test starts
    as processes only the services whose process it kills, restarts, signals, measures or traces.
    """

    def __init__(self, nats_url: str, log_dir: Path, prefix: str) -> None:
        self.nats_url = nats_url
        self.log_dir = log_dir
        self.prefix = prefix
        self.services: list[AnyService] = []
        self.dispatchers: list[AnyService] = []
        self.registries: list[AnyService] = []
        self.workers: dict[str, AnyService] = {}
        self.nc: Any = None

    def env(self) -> dict[str, str]:
        return {
            "LOOM_NATS_URL": self.nats_url,
            "LOOM_REDIS_URL": REDIS_URL,
            "LOOM_DATABASE_URL": DATABASE_URL,
            "LOOM_REDIS_PREFIX": self.prefix,
            "LOOM_LOG_LEVEL": "INFO",
        }

    def service_env(self, module: str) -> dict[str, str]:
        """``env`` with the NATS user of the service's role (the account's admin for a module
        that has none)."""
        role = ROLE_OF_MODULE.get(module)
        if role is None:
            return self.env()
        url, credentials = role_credentials(self.nats_url, role)
        return {**self.env(), "LOOM_NATS_URL": url, **credentials}

    def service(self, name: str, module: str, *, process: bool = False, **env: str) -> AnyService:
        """A Loom service on this stack (not started yet: ``await svc.started()``)."""
        return self.add(name, module, env, process=process)

    def add(self, name: str, module: str, env: dict[str, str], *, process: bool = False) -> AnyService:
        """``service`` with the environment as a dict."""
        svc: AnyService
        if process:
            svc = Service(name, module, {**self.service_env(module), **env}, self.log_dir)
        else:
            svc = LocalService(name, module, env, self.service_env(module))
        self.services.append(svc)
        return svc

    def registry_service(self, *, process: bool = False, **env: str) -> AnyService:
        svc = self.service(f"registry-{len(self.registries)}", "loom_registry", process=process, **env)
        self.registries.append(svc)
        return svc

    def dispatcher_service(self, *, process: bool = False, **env: str) -> AnyService:
        env = {"LOOM_NO_INSTANCE_TIMEOUT_S": "3", "LOOM_TASK_TIMEOUT_S": "30", **env}
        svc = self.service(f"dispatcher-{len(self.dispatchers)}", "loom_dispatcher", process=process, **env)
        self.dispatchers.append(svc)
        return svc

    def worker_service(
        self,
        instance_id: str,
        agents: str = "echo,calculator,orchestrator",
        *,
        process: bool = False,
        **env: str,
    ) -> AnyService:
        env = {
            "LOOM_INSTANCE_ID": instance_id,
            "LOOM_WORKER_AGENTS": agents,
            "LOOM_HEARTBEAT_INTERVAL_S": "0.2",
            "LOOM_DRAIN_TIMEOUT_S": "5",
            **env,
        }
        svc = self.service(f"worker-{instance_id}", "loom_agent_worker", process=process, **env)
        self.workers[instance_id] = svc
        return svc

    async def registry(self, *, process: bool = False, **env: str) -> AnyService:
        return await self.registry_service(process=process, **env).started()

    async def dispatcher(self, *, process: bool = False, **env: str) -> AnyService:
        return await self.dispatcher_service(process=process, **env).started()

    async def worker(
        self,
        instance_id: str,
        agents: str = "echo,calculator,orchestrator",
        *,
        process: bool = False,
        **env: str,
    ) -> AnyService:
        return await self.worker_service(instance_id, agents, process=process, **env).started()

    @property
    def api(self) -> str:
        return self.dispatchers[0].url

    async def wait_instances(self, agent_id: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        """Wait until the registry lists ``count`` live instances of ``agent_id``."""

        async def listed() -> list[dict[str, Any]] | None:
            async with httpx.AsyncClient(timeout=2) as client:
                body = (await client.get(f"{self.registries[0].url}/api/agents")).json()
            for agent in body["agents"]:
                if agent["agentId"] == agent_id and len(agent["instances"]) == count:
                    return list(agent["instances"])
            return None

        result: list[dict[str, Any]] = await wait_for(listed, timeout, f"{count} instances of {agent_id}")
        return result

    async def nats(self) -> Any:
        """A client on the test's NATS account (closed by ``stop``)."""
        if self.nc is None:
            self.nc = await nats.connect(self.nats_url)
        return self.nc

    async def stop(self) -> None:
        """Stop every service, newest first, and the client; safe to call twice."""
        if self.nc is not None:
            nc, self.nc = self.nc, None
            await nc.close()
        services, self.services = self.services, []
        failures: list[BaseException] = []
        for svc in reversed(services):
            try:
                if isinstance(svc, Service):
                    await asyncio.to_thread(svc.stop)
                else:
                    await svc.stop()
            except Exception as exc:  # stop the others anyway, then report
                failures.append(exc)
        if failures:
            raise failures[0]


def process(svc: AnyService) -> Service:
    """The service as the process it was started as (``process=True``)."""
    assert isinstance(svc, Service), f"{svc.name} runs in the test's process"
    return svc


def local(svc: AnyService) -> LocalService:
    """The service as the in-process app it was started as."""
    assert isinstance(svc, LocalService), f"{svc.name} is a process"
    return svc


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or dotenv_values(REPO / ".env").get(name) or default


REDIS_URL = _setting("LOOM_REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = _setting("LOOM_DATABASE_URL", "postgresql://postgres@127.0.0.1:5433/loom")


async def delete_redis_keys(prefix: str) -> None:
    r = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in r.scan_iter(f"{prefix}:*", count=1000)]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


@contextlib.asynccontextmanager
async def session_nats(tmp: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp, tmp / "jetstream")
    try:
        yield await server.started()
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def stack_of(server: NatsServer, log_dir: Path) -> AsyncIterator[Stack]:
    """A stack on a new account of ``server`` and a new Redis prefix, stopped and cleaned in ``finally``."""
    prefix = f"loomtest-{uuid.uuid4().hex[:10]}"
    stack = Stack(await server.account(), log_dir, prefix)
    try:
        yield stack
    finally:
        try:
            await stack.stop()
        finally:
            await delete_redis_keys(prefix)


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
