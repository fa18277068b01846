"""What runs where in the local stack, and whether it is healthy (`make up` / `make ps`)."""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from dotenv import dotenv_values
from loom_protocol.settings import redacted
from rich.console import Console
from rich.table import Table

ENV_FILE = Path(__file__).resolve().parent.parent / ".env"


def _infra() -> list[tuple[str, int, str]]:
    """The infrastructure as `.env` names it (what the services connect to); a NATS cluster
    (LOOM_NATS_NODES=3) is one row per node."""
    env = {k: v or "" for k, v in dotenv_values(ENV_FILE).items()}
    nats = env.get("LOOM_NATS_URL") or "nats://127.0.0.1:4222"
    redis = env.get("LOOM_REDIS_URL") or "redis://127.0.0.1:6379/0"
    database = env.get("LOOM_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5433/loom"
    urls = [u.strip() for u in nats.split(",") if u.strip()]
    rows = [
        (f"NATS JetStream {i}" if len(urls) > 1 else "NATS JetStream", urlsplit(u).port or 4222, u)
        for i, u in enumerate(urls)
    ]
    return [
        *rows,
        ("Redis", urlsplit(redis).port or 6379, redacted(redis)),
        ("TimescaleDB", urlsplit(database).port or 5432, redacted(database)),
    ]


SERVICES = [
    ("dispatcher", 8001),
    ("registry", 8002),
    ("ingest", 8003),
    ("query", 8004),
    ("replay", 8005),
    ("agent-worker-0", 8100),
    ("agent-worker-1", 8101),
]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _health(port: int) -> tuple[bool, bool]:
    out = []
    for path in ("/healthz", "/readyz"):
        try:
            out.append(httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1.0).status_code == 200)
        except httpx.HTTPError:
            out.append(False)
    return out[0], out[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for every service to be live"
    )
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        health = {name: _health(port) for name, port in SERVICES}
        if all(live for live, _ in health.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    console = Console(width=140)
    table = Table(title="Loom local stack")
    for col in ("component", "where", "live", "ready", "log"):
        table.add_column(col)
    for name, port, url in _infra():
        table.add_row(name, url, "yes" if _port_open(port) else "NO", "", "")
    for name, port in SERVICES:
        live, ready = health[name]
        table.add_row(
            name,
            f"http://127.0.0.1:{port}",
            "yes" if live else "NO",
            "yes" if ready else "no",
            f".loom/logs/{name}.log",
        )
    console.print(table)
    return 0 if all(live for live, _ in health.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
