"""Loom on a 3-node NATS cluster: streams and KV buckets with 3 replicas, every service given the
three servers in ``LOOM_NATS_URL``, two dispatchers, two registries, two workers and ingest as
processes. The node leading LOOM_TASKS is killed while tasks run, then one dispatcher: no task
is lost, no event is lost, the run finishes on the remaining two nodes, and a client that
retries across the two dispatchers sees no error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from loom_client import AsyncLoomClient

from tests.chaos.audit import audit, row_count, stream_message_count, terminal_count
from tests.integration.events_support import FAST_INGEST, fetch, fresh_database
from tests.integration.harness import (
    REDIS_URL,
    VENV_BIN,
    Process,
    Service,
    delete_redis_keys,
    free_port,
    port_open,
    wait_for,
)
from tests.integration.task_support import sleepy

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

TASKS = 90
CLUSTER = "loomtest"


class ClusterNode(Process):
    """One nats-server of a 3-node cluster: JetStream, a client port and a route port."""

    def __init__(self, index: int, client_port: int, route_ports: list[int], log_dir: Path) -> None:
        self.server_name = f"n{index}"
        self.port = client_port
        routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for i, p in enumerate(route_ports) if i != index)
        config = log_dir / f"{self.server_name}.conf"
        config.write_text(
            f'server_name: "{self.server_name}"\n'
            f'listen: "127.0.0.1:{client_port}"\n'
            f'jetstream {{ store_dir: "{log_dir / self.server_name}" }}\n'
            f'cluster {{ name: "{CLUSTER}", listen: "127.0.0.1:{route_ports[index]}", routes: [{routes}] }}\n'
        )
        super().__init__(self.server_name, [str(VENV_BIN / "nats-server"), "-c", str(config)], {}, log_dir)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def nats_cluster(log_dir: Path) -> AsyncIterator[list[ClusterNode]]:
    route_ports = [free_port() for _ in range(3)]
    nodes = [ClusterNode(i, free_port(), route_ports, log_dir) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            await wait_for(lambda node=node: port_open(node.port), 15, f"{node.name} to listen")
        nc = await nats.connect([n.url for n in nodes])
        try:

            async def jetstream_ready() -> bool:
                with contextlib.suppress(Exception):
                    reply = await nc.request("$JS.API.INFO", b"", timeout=1)
                    return "error" not in json.loads(reply.data)
                return False

            await wait_for(jetstream_ready, 30, "the cluster's JetStream to elect a meta leader")
        finally:
            await nc.close()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def stream_leader(nc: Any, stream: str) -> str | None:
    with contextlib.suppress(Exception):
        reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2)
        info = json.loads(reply.data)
        cluster = info.get("cluster") or {}
        if len(cluster.get("replicas") or []) == 2 and cluster.get("leader"):
            return str(cluster["leader"])
    return None


async def test_a_run_survives_the_loss_of_the_task_stream_leader_and_of_a_dispatcher(tmp_path: Path) -> None:
    prefix = f"loomtest-{uuid.uuid4().hex[:10]}"
    services: list[Service] = []
    async with nats_cluster(tmp_path) as nodes, fresh_database() as database_url:
        urls = ",".join(n.url for n in nodes)
        env = {
            "LOOM_NATS_URL": urls,
            "LOOM_NATS_REPLICAS": "3",
            "LOOM_REDIS_URL": REDIS_URL,
            "LOOM_REDIS_PREFIX": prefix,
            "LOOM_DATABASE_URL": database_url,
        }

        def service(name: str, module: str, **extra: str) -> Service:
            svc = Service(name, module, {**env, **extra}, tmp_path)
            services.append(svc)
            return svc

        dispatcher_env = {"LOOM_RETRY_BACKOFF_S": "0.05", "LOOM_NO_INSTANCE_TIMEOUT_S": "30"}
        worker_env = {"LOOM_WORKER_AGENTS": "calculator", "LOOM_HEARTBEAT_INTERVAL_S": "0.5"}
        nc = None
        try:
            first = [
                service("registry-0", "loom_registry"),
                service("dispatcher-0", "loom_dispatcher", **dispatcher_env),
                service("ingest", "loom_ingest", **FAST_INGEST),
            ]
            await asyncio.gather(*(s.started(90) for s in first))
            rest = [
                service("registry-1", "loom_registry"),
                service("dispatcher-1", "loom_dispatcher", **dispatcher_env),
                service("worker-c0", "loom_agent_worker", LOOM_INSTANCE_ID="c0", **worker_env),
                service("worker-c1", "loom_agent_worker", LOOM_INSTANCE_ID="c1", **worker_env),
            ]
            await asyncio.gather(*(s.started(90) for s in rest))
            dispatchers = [s for s in services if s.name.startswith("dispatcher")]
            servers = [n.url for n in nodes]
            nc = await nats.connect(servers, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
            js = nc.jetstream(timeout=5)
            for stream in ("LOOM_TASKS", "LOOM_EVENTS"):
                assert (await js.stream_info(stream)).config.num_replicas == 3

            errors: list[BaseException] = []
            ids: list[str] = []
            submitted = 0
            async with AsyncLoomClient(
                dispatcher_url=",".join(d.url for d in dispatchers), timeout=10
            ) as loom:

                async def submit_all() -> None:
                    nonlocal submitted
                    for i in range(TASKS):
                        parameters = sleepy(1.0) if i % 5 == 0 else sleepy(0.05)
                        try:
                            task = await loom.submit("calculator", parameters, wait_for_agent=True)
                            ids.append(task.task_id)
                        except Exception as exc:  # what a user would see
                            errors.append(exc)
                        submitted += 1
                        await asyncio.sleep(0.05)  # the load's shape

                submitting = asyncio.create_task(submit_all())
                try:
                    await wait_for(lambda: submitted >= TASKS // 4, 60, "the first submissions")
                    leader = await wait_for(lambda: stream_leader(nc, "LOOM_TASKS"), 15, "LOOM_TASKS' leader")
                    victim = next(n for n in nodes if n.server_name == leader)
                    victim.kill()
                    await wait_for(lambda: submitted >= TASKS // 2, 60, "submissions after the node loss")
                    dispatchers[0].kill()
                    await submitting
                finally:
                    submitting.cancel()
            assert not errors, f"the client saw {len(errors)} errors: {errors[:3]!r}"
            assert len(ids) == TASKS

            async def ended() -> bool:
                return await terminal_count(database_url, ids) == len(ids)

            await wait_for(ended, 120, "every task terminal in the database", interval=0.5)
            new_leader = await wait_for(lambda: stream_leader(nc, "LOOM_TASKS"), 30, "a new leader")
            assert new_leader != leader

            async def caught_up() -> bool:
                return await row_count(database_url) >= await stream_message_count(js)

            await wait_for(caught_up, 60, "ingest to store every stream message", interval=0.5)
            figures = await audit("nats node", js, database_url, ids)
            print(
                f"cluster: {figures.terminal}/{figures.tasks} terminal, {figures.completed} completed, "
                f"executed twice {figures.executed_twice}, events missing {figures.events_missing}, "
                f"duplicated {figures.events_duplicated}, executions without events "
                f"{figures.executions_without_events}; killed {leader}, new leader {new_leader}"
            )
            assert figures.completed == TASKS, figures.not_terminal[:5]
            stored = {
                task_id: [
                    (r["type"], r["instance_id"], r["time"].isoformat())
                    for r in await fetch(
                        database_url,
                        "SELECT type, instance_id, time FROM events WHERE task_id = $1 ORDER BY time",
                        task_id,
                    )
                ]
                for task_id in figures.without_events[:3]
            }
            assert figures.clean, (
                f"stored for the first tasks without an answer: {stored}; "
                f"duplicated {figures.events_duplicated}, missing {figures.missing_ids[:5]}, "
                f"twice {figures.twice[:5]}, without events {figures.without_events[:5]}"
            )
            for svc in services:
                if svc is not dispatchers[0]:
                    await svc.ready(30)
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
            for svc in reversed(services):
                await asyncio.to_thread(svc.stop)
            await delete_redis_keys(prefix)
