"""The project's Prometheus scrape config (deploy/prometheus/prometheus.yml, shared by compose and
the Helm chart, where targets are found by DNS) turned into one for processes on 127.0.0.1.

    python scripts/prometheus_local.py OUT.yml [--interval 5s] [--target job=host:port ...]

Each DNS-discovered job becomes a static job with the given local targets; everything else in
the shared file (jobs, paths, intervals) is kept, so there is one scrape config, not two.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml

SHARED = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "prometheus.yml"
# `make up`: the supervisord processes of deploy/local/supervisord.conf
LOCAL_TARGETS = {
    "dispatcher": ["127.0.0.1:8001"],
    "registry": ["127.0.0.1:8002"],
    "ingest": ["127.0.0.1:8003"],
    "query": ["127.0.0.1:8004"],
    "replay": ["127.0.0.1:8005"],
    "agent-worker": ["127.0.0.1:8100", "127.0.0.1:8101"],
}


def localize(
    shared: dict[str, Any], targets: dict[str, list[str]], interval: str, self_port: int
) -> dict[str, Any]:
    config = copy.deepcopy(shared)
    config.setdefault("global", {})["scrape_interval"] = interval
    jobs = []
    for job in config.get("scrape_configs", []):
        name = job["job_name"]
        if name == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{self_port}"]}]
        elif "dns_sd_configs" in job:
            if name not in targets:
                continue
            del job["dns_sd_configs"]
            job["static_configs"] = [{"targets": targets[name]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--port", type=int, default=9090)
    args = parser.parse_args()
    config = localize(yaml.safe_load(SHARED.read_text()), LOCAL_TARGETS, args.interval, args.port)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(config, sort_keys=False))


if __name__ == "__main__":
    main()
