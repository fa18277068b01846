"""docker compose: the compose-spec schema, Compose's own loader, and agreement with services.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

import checks
import pytest


def test_compose_schema() -> None:
    checks.compose_schema(checks.COMPOSE_FILE)


def test_compose_config(compose_model: dict) -> None:
    assert compose_model["name"] == "loom"


def test_compose_matches_services(compose_model: dict, services: list[dict], infra: list[dict]) -> None:
    checks.compose_matches_services(compose_model, services, infra)


def test_worker_stop_grace_exceeds_drain(compose_model: dict) -> None:
    for name in ("agent-worker-0", "agent-worker-1"):
        worker = compose_model["services"][name]
        drain = float(worker["environment"]["LOOM_DRAIN_TIMEOUT_S"])
        grace = worker.get("stop_grace_period", "10s")
        assert grace.endswith("s") and float(grace[:-1]) > drain, (
            f"{name} stop_grace_period {grace} must exceed LOOM_DRAIN_TIMEOUT_S={drain}"
        )


def test_env_comes_from_one_file(compose_model: dict, services: list[dict]) -> None:
    env_file = (checks.COMPOSE_FILE.parent / "loom.env").read_text()
    keys = {
        line.split("=", 1)[0] for line in env_file.splitlines() if "=" in line and not line.startswith("#")
    }
    for name in (n for svc in services for n in checks.compose_services(svc)):
        env = compose_model["services"][name]["environment"]
        own = set(env) - keys
        # LOOM_API_KEYS: a secret from the operator's shell (${LOOM_API_KEYS}), never in a file;
        # the NATS user and password are each service's own (test_nats_auth.py); the Redis and
        # database URLs hold passwords from deploy/compose/.env (test_compose_secrets.py)
        own_ok = {
            "LOOM_HTTP_PORT",
            "OTEL_SERVICE_NAME",
            "LOOM_API_KEYS",
            "LOOM_NATS_USER",
            "LOOM_NATS_PASSWORD",
            "LOOM_REDIS_URL",
            "LOOM_DATABASE_URL",
            "LOOM_INSTANCE_ID",  # a worker instance's own id (services.toml instances)
        }
        assert own <= own_ok, f"{name} sets {sorted(own)} in compose.yaml: shared settings belong in loom.env"


def test_compose_host_override(services: list[dict]) -> None:
    # Compose's own loader only: check-jsonschema cannot read the override's !reset tags.
    model = checks.compose_config(checks.COMPOSE_FILE, overrides=[checks.COMPOSE_HOST_FILE], profiles=())
    checks.compose_host_matches(model, services)
    query = model["services"]["query"]["environment"]
    assert query["LOOM_DISPATCHER_URL"] == "http://127.0.0.1:18001"
    assert query["LOOM_REPLAY_URL"] == "http://127.0.0.1:18005"


def test_compose_host_takes_infrastructure_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_COMPOSE_NATS_URL", "nats://127.0.0.1:14222")
    model = checks.compose_config(checks.COMPOSE_FILE, overrides=[checks.COMPOSE_HOST_FILE], profiles=())
    for name, svc in model["services"].items():
        assert svc["environment"]["LOOM_NATS_URL"] == "nats://127.0.0.1:14222", name


# ------------------------------------------------------------------ the checks bite


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A copy of deploy/ (with the Dockerfile), so relative paths in compose.yaml still resolve."""
    shutil.copytree(checks.REPO / "deploy", tmp_path / "deploy")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"sample anchor {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_checks_bite_on_key_typo(stack: Path) -> None:
    compose = stack / "deploy/compose/compose.yaml"
    edit(
        compose,
        '    healthcheck:\n      test: ["CMD-SHELL", "redis-cli',
        '    healthchek:\n      test: ["CMD-SHELL", "redis-cli',
    )
    with pytest.raises(checks.CheckFailed, match="healthchek"):
        checks.compose_schema(compose)
    with pytest.raises(checks.CheckFailed, match="healthchek"):
        checks.compose_config(compose)


def test_config_bites_on_unknown_dependency(stack: Path) -> None:
    compose = stack / "deploy/compose/compose.yaml"
    edit(
        compose, "      redis: {condition: service_healthy}\n", "      rediss: {condition: service_healthy}\n"
    )
    checks.compose_schema(compose)  # the schema cannot see this one ...
    with pytest.raises(checks.CheckFailed, match="rediss"):  # ... Compose's loader does
        checks.compose_config(compose)


def test_config_bites_on_missing_env_file(stack: Path) -> None:
    (stack / "deploy/compose/loom.env").unlink()
    with pytest.raises(checks.CheckFailed, match="loom.env"):
        checks.compose_config(stack / "deploy/compose/compose.yaml")


def test_consistency_bites_on_drift(stack: Path, services: list[dict], infra: list[dict]) -> None:
    compose = stack / "deploy/compose/compose.yaml"
    edit(compose, 'ports: ["${LOOM_BIND_ADDRESS:-127.0.0.1}:8004:8004"]', 'ports: ["8014:8004"]')
    edit(compose, "      LOOM_INSTANCE_ID: worker-1\n", "      LOOM_INSTANCE_ID: worker-0\n")
    edit(compose, "      timescaledb: {condition: service_healthy}\n\n  query:", "\n  query:")
    edit(compose, "MODULE: loom_registry", "MODULE: loom_registri")
    model = checks.compose_config(compose)
    with pytest.raises(
        checks.CheckFailed,
        match=r"(?s)agent-worker-1: LOOM_INSTANCE_ID 'worker-0' is not 'worker-1'.*registry: build args.*"
        r"ingest: depends_on.*query: port",
    ):
        checks.compose_matches_services(model, services, infra, root=stack)


def test_compose_host_check_bites(stack: Path, services: list[dict]) -> None:
    host = stack / "deploy/compose/compose.host.yaml"
    edit(host, 'LOOM_HTTP_PORT: "18004"', 'LOOM_HTTP_PORT: "8004"')
    edit(host, "  prometheus: {profiles: [bundled-infra]}\n", "")
    text = host.read_text()
    at = text.index("  registry:")
    host.write_text(text[:at] + text[at:].replace("    network_mode: host\n", "", 1))
    model = checks.compose_config(stack / "deploy/compose/compose.yaml", overrides=[host], profiles=())
    with pytest.raises(
        checks.CheckFailed,
        match=r"(?s)not exactly the Loom services.*query: LOOM_HTTP_PORT 8004.*registry: network_mode",
    ):
        checks.compose_host_matches(model, services)


def test_bundled_redis_keeps_an_append_only_file_on_its_volume(compose_model: dict) -> None:
    redis = compose_model["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(v.get("source") == "redis-data" and v["target"] == "/data" for v in redis["volumes"])


def test_compose_cluster_override(services: list[dict]) -> None:
    cluster = checks.REPO / "deploy" / "compose" / "compose.cluster.yaml"
    model = checks.compose_config(checks.COMPOSE_FILE, overrides=[cluster], profiles=())
    nodes = {name: model["services"][name] for name in ("nats", "nats-2", "nats-3")}
    for name, node in nodes.items():
        command = node["command"]
        routes = command[command.index("--routes") + 1].split(",")
        assert sorted(r.split("//")[1].split(":")[0] for r in routes) == sorted(set(nodes) - {name})
        assert command[command.index("--cluster_name") + 1] == "loom"
    urls = "nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222"
    for svc in services:
        for name in checks.compose_services(svc):
            env = model["services"][name]["environment"]
            assert env["LOOM_NATS_URL"] == urls and env["LOOM_NATS_REPLICAS"] == "3", name
            assert env["LOOM_HTTP_PORT"] == str(svc["port"])  # the base file's own settings stay
