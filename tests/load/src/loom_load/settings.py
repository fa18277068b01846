"""Where the stack is, the API key it wants, and how much load a profile puts on it.

Targets come from (highest first) command-line options, ``LOOM_*`` environment variables,
the repository's ``.env`` (written by ``make up``), then the defaults of the local stack. Only
loopback targets are accepted: this harness is for the machine it runs on. The API key
(``LOOM_API_KEY``, from the environment or ``.env``, as the SDK reads it) is sent as
``Authorization: Bearer <key>`` on every HTTP and WebSocket call when set.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values
from loom_protocol.settings import nats_connection, redacted

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Targets:
    nats_url: str = "nats://127.0.0.1:4222"
    dispatcher_url: str = "http://127.0.0.1:8001"
    registry_url: str = "http://127.0.0.1:8002"
    query_ws_url: str = "ws://127.0.0.1:8004/ws/events"
    database_url: str = "postgresql://postgres@127.0.0.1:5433/loom"
    celery_url: str = "redis://127.0.0.1:6379/5"

    @property
    def nats_servers(self) -> list[str]:
        """The servers of ``nats_url``: one, or a cluster's, comma-separated (LOOM_NATS_NODES=3)."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def check_loopback(self) -> None:
        for name, value in asdict(self).items():
            for url in value.split(","):
                host = urlsplit(url.strip()).hostname
                if host not in LOOPBACK:
                    raise ValueError(f"{name}={url!r}: only loopback targets are allowed (got host {host!r})")

    def redacted(self) -> dict[str, str]:
        return {name: redacted(url) for name, url in asdict(self).items()}


def find_dotenv(start: Path | None = None) -> Path | None:
    """The ``.env`` of the repository: the first one found walking up from ``start`` (cwd)."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / ".env"
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            return None
    return None


def celery_url_from_redis(redis_url: str, db: int = 5) -> str:
    """The Loom Redis URL with its database number replaced by ``db`` (Celery gets its own)."""
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def _settings(env: dict[str, str] | None) -> dict[str, str]:
    """The ``.env`` of the repository, overridden by ``env`` (default: the environment)."""
    merged: dict[str, str] = {}
    dotenv = find_dotenv()
    if dotenv is not None:
        merged.update({k: v for k, v in dotenv_values(dotenv).items() if v})
    merged.update(env if env is not None else dict(os.environ))
    return merged


def resolve_api_key(env: dict[str, str] | None = None) -> str | None:
    """``LOOM_API_KEY`` from the environment, else the repository's ``.env``; None when unset (or
    set empty in the environment: no key is sent)."""
    return _settings(env).get("LOOM_API_KEY") or None


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The headers that carry ``api_key`` (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def resolve_targets(overrides: dict[str, str | None], env: dict[str, str] | None = None) -> Targets:
    """Targets from overrides > environment > .env > defaults."""
    merged = _settings(env)
    values: dict[str, Any] = {}
    mapping = {
        "nats_url": "LOOM_NATS_URL",
        "dispatcher_url": "LOOM_DISPATCHER_URL",
        "registry_url": "LOOM_REGISTRY_URL",
        "query_ws_url": "LOOM_QUERY_WS_URL",
        "database_url": "LOOM_DATABASE_URL",
        "celery_url": "LOOM_LOAD_CELERY_URL",
    }
    for field_name, var in mapping.items():
        if merged.get(var):
            values[field_name] = merged[var]
    if "celery_url" not in values and merged.get("LOOM_REDIS_URL"):
        values["celery_url"] = celery_url_from_redis(merged["LOOM_REDIS_URL"])
    values.update({k: v for k, v in overrides.items() if v})
    if merged.get("LOOM_NATS_USER"):
        # the stack's NATS has users (make up writes the admin's to .env): the harness, its
        # peers and its client processes connect as that user, its credentials in each URL
        values["nats_url"] = ",".join(
            nats_connection(
                values.get("nats_url", Targets.nats_url),
                merged["LOOM_NATS_USER"],
                merged.get("LOOM_NATS_PASSWORD", ""),
            ).servers
        )
    targets = Targets(**values)
    targets.check_loopback()
    return targets


@dataclass(frozen=True)
class Profile:
    """How much of each workload one run sends. Every phase is bounded by count and by time."""

    name: str
    echo_closed_count: int  # echo over NATS, closed loop
    echo_closed_concurrency: int
    echo_rest_count: int  # echo over REST ?wait, closed loop
    echo_open_rate: float  # echo over NATS, open loop: at most this many tasks/s (see cli.open_rate)
    echo_open_seconds: float
    sequential_count: int  # sequential round trips, each of REST and NATS
    calculator_count: int
    calculator_concurrency: int
    orchestrator_count: int
    orchestrator_concurrency: int
    celery_count: int  # Celery and every peer (taskiq, FastStream, the nats-py floor)
    celery_sequential_count: int
    rounds: int  # paired rounds of Loom's, Celery's and taskiq's closed loops (rounds.py)
    ceiling_seconds: float  # each raw ceiling
    ingest_burst_events: int
    phase_timeout_s: float  # hard cap on one phase's submissions
    grace_s: float  # how long to wait for outcomes after the last submission
    ingest_grace_s: float
    io_count: int  # the I/O task (sleeps io_delay_s), Loom and Celery each
    io_concurrency: int = 64
    io_delay_s: float = 0.1
    live_event_rate: float = 1000.0  # the live feed's figure: synthetic events/s, paced
    live_seconds: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(  # seconds: checks that the harness and the stack work, measures little
        name="smoke",
        echo_closed_count=200,
        echo_closed_concurrency=16,
        echo_rest_count=100,
        echo_open_rate=50.0,
        echo_open_seconds=2.0,
        sequential_count=20,
        calculator_count=20,
        calculator_concurrency=4,
        orchestrator_count=4,
        orchestrator_concurrency=2,
        celery_count=200,
        celery_sequential_count=20,
        rounds=1,
        ceiling_seconds=0.5,
        ingest_burst_events=1000,
        phase_timeout_s=30.0,
        grace_s=10.0,
        ingest_grace_s=10.0,
        io_count=200,
        live_seconds=1.0,
    ),
    "short": Profile(
        name="short",
        echo_closed_count=2000,
        echo_closed_concurrency=64,
        echo_rest_count=1000,
        echo_open_rate=150.0,
        echo_open_seconds=8.0,
        sequential_count=200,
        calculator_count=200,
        calculator_concurrency=16,
        orchestrator_count=20,
        orchestrator_concurrency=4,
        celery_count=2000,
        celery_sequential_count=200,
        rounds=5,
        ceiling_seconds=2.0,
        ingest_burst_events=50_000,  # rows appear a committed batch (up to 2,000) at a time
        phase_timeout_s=90.0,
        grace_s=15.0,
        ingest_grace_s=15.0,
        io_count=1000,
    ),
    "long": Profile(
        name="long",
        echo_closed_count=20_000,
        echo_closed_concurrency=128,
        echo_rest_count=5000,
        echo_open_rate=300.0,
        echo_open_seconds=30.0,
        sequential_count=1000,
        calculator_count=2000,
        calculator_concurrency=32,
        orchestrator_count=200,
        orchestrator_concurrency=8,
        celery_count=20_000,
        celery_sequential_count=1000,
        rounds=5,
        ceiling_seconds=10.0,
        ingest_burst_events=100_000,
        phase_timeout_s=600.0,
        grace_s=60.0,
        ingest_grace_s=60.0,
        io_count=5000,
        live_seconds=20.0,
    ),
}
