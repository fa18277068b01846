"""Property-based tests from each service's OpenAPI: Schemathesis (the real CLI, as a user or an
attacker would run it) generates requests for every operation of the dispatcher, registry,
ingest, query and replay (examples, coverage of each parameter's edge values, random fuzzing and
stateful sequences; bounded: a few examples per operation) with an admin key, and no request may
get a 5xx. The services then still answer /healthz."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.events_support import FAST_INGEST, database_url_fixture  # noqa: F401 (fixture)
from tests.integration.harness import AnyService, Stack, wait_for

pytestmark = pytest.mark.component

ADMIN = "loom_fuzz_admin_key_0123456789abcdefghijklmnopqrstuv"
KEYS = {"LOOM_API_KEYS": ADMIN}
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = os.environ.get("LOOM_FUZZ_EXAMPLES", "10")  # per operation and phase
SEED = os.environ.get("LOOM_FUZZ_SEED", "1")  # another seed explores other inputs


async def _schemathesis(service: AnyService, report: Path) -> tuple[int, str]:
    argv = [
        str(SCHEMATHESIS),
        "run",
        f"{service.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--header",
        f"Authorization: Bearer {ADMIN}",
        "--request-timeout",
        "15",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    proc = await asyncio.create_subprocess_exec(  # its cache (.schemathesis/) in the test's folder
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=report.parent
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.fixture
async def services(database_url: str, stack: Stack) -> dict[str, AnyService]:
    registry = stack.registry_service(**KEYS)
    dispatcher = stack.dispatcher_service(**KEYS)
    worker = stack.worker_service("w1", **KEYS)
    ingest = stack.add("ingest-0", "loom_ingest", {"LOOM_DATABASE_URL": database_url, **FAST_INGEST, **KEYS})
    await asyncio.gather(*(svc.started(120) for svc in (registry, dispatcher, worker, ingest)))
    query = stack.service("query-0", "loom_query", LOOM_DATABASE_URL=database_url, **KEYS)
    replay = stack.service(
        "replay-0",
        "loom_replay",
        LOOM_DATABASE_URL=database_url,
        LOOM_DISPATCHER_URL=dispatcher.url,
        **KEYS,
    )
    await asyncio.gather(query.started(120), replay.started(120))
    return {
        "dispatcher": dispatcher,
        "registry": registry,
        "ingest": ingest,
        "query": query,
        "replay": replay,
    }


@pytest.mark.timeout(480)
async def test_no_generated_request_gets_a_5xx(services: dict[str, AnyService], tmp_path: Path) -> None:
    async def run(name: str, service: AnyService) -> tuple[str, int, str]:
        started = time.monotonic()
        code, out = await _schemathesis(service, tmp_path / f"{name}.xml")
        print(f"{name}: schemathesis exit {code} in {time.monotonic() - started:.1f} s")
        return name, code, out

    runs = await asyncio.gather(*(run(name, service) for name, service in services.items()))
    failures = {}
    for name, code, out in runs:
        tested = [line for line in out.splitlines() if "generated" in line and "passed" in line]
        if code != 0 or not tested:
            failures[name] = out[-6000:]
    assert not failures, "\n\n".join(f"--- {name} ---\n{out}" for name, out in failures.items())

    async def healthy() -> bool:
        async with httpx.AsyncClient(timeout=5) as client:
            answers = [await client.get(f"{svc.url}/healthz") for svc in services.values()]
        return all(a.status_code == 200 for a in answers)

    await wait_for(healthy, 30, "every service healthy after the run")
