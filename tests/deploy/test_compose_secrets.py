"""Compose's Redis and TimescaleDB with passwords: the bundled Redis requires one and TimescaleDB's
postgres user has one, both from deploy/compose/.env, which one command writes
(scripts/compose_env.py, with the NATS users' passwords); each service that needs them gets its
URLs built with them, and no compose file or loom.env holds a literal password."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import checks
import pytest

COMPOSE_DIR = checks.REPO / "deploy" / "compose"
CLUSTER_FILE = COMPOSE_DIR / "compose.cluster.yaml"
SECRET_FREE = [COMPOSE_DIR / n for n in ("compose.yaml", CLUSTER_FILE.name, "compose.host.yaml", "loom.env")]
OTHER = {"LOOM_REDIS_PASSWORD": "otherRedisPassword2", "LOOM_POSTGRES_PASSWORD": "otherPostgresPassword2"}


@pytest.mark.parametrize("passwords", [checks.sample_store_passwords(), OTHER], ids=["sample", "other"])
def test_redis_and_timescaledb_take_their_passwords_from_the_env_file(
    services: list[dict], passwords: dict[str, str]
) -> None:
    model = checks.compose_config(checks.COMPOSE_FILE, profiles=(), store_passwords=passwords)
    checks.compose_store_auth(model, services, passwords)
    cluster = checks.compose_config(
        checks.COMPOSE_FILE, overrides=[CLUSTER_FILE], profiles=(), store_passwords=passwords
    )
    checks.compose_store_auth(cluster, services, passwords)


def test_no_literal_password_in_the_compose_files_or_loom_env() -> None:
    checks.no_literal_secrets(SECRET_FREE)


def test_compose_without_the_store_passwords_stops_and_says_how_to_make_them(tmp_path: Path) -> None:
    shutil.copytree(checks.REPO / "deploy", tmp_path / "deploy")
    (tmp_path / "deploy/compose/.env").unlink(missing_ok=True)  # a developer's own passwords
    compose = tmp_path / "deploy/compose/compose.yaml"
    for var, what in (("LOOM_REDIS_PASSWORD", "Redis"), ("LOOM_POSTGRES_PASSWORD", "TimescaleDB")):
        partial = {k: v for k, v in checks.sample_store_passwords().items() if k != var}
        with pytest.raises(
            checks.CheckFailed,
            match=rf"{var} is missing a value: no {what} password - run uv run python scripts/compose_env.py",
        ):
            checks.compose_config(compose, store_passwords=partial)
        # the host stack too: Compose reads compose.yaml whole (compose.host.yaml's header says so)
        with pytest.raises(checks.CheckFailed, match=f"{var} is missing a value"):
            checks.compose_config(
                compose, overrides=[tmp_path / "deploy/compose/compose.host.yaml"], store_passwords=partial
            )


def test_compose_host_reaches_the_machines_stores_without_the_bundled_passwords(services: list[dict]) -> None:
    passwords = checks.sample_store_passwords()
    model = checks.compose_config(
        checks.COMPOSE_FILE, overrides=[checks.COMPOSE_HOST_FILE], profiles=(), store_passwords=passwords
    )
    for name, svc in model["services"].items():
        env = svc["environment"]
        assert env["LOOM_REDIS_URL"] == "redis://127.0.0.1:6379/0", name
        assert env["LOOM_DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5433/loom", name
        leaked = [k for k, v in env.items() if any(p in str(v) for p in passwords.values())]
        assert not leaked, f"{name}: {leaked} hold a bundled store's password"


# ------------------------------------------------------------------ the checks bite


def test_store_auth_check_bites(services: list[dict]) -> None:
    passwords = checks.sample_store_passwords()
    model = checks.compose_config(checks.COMPOSE_FILE, profiles=(), store_passwords=passwords)
    redis = model["services"]["redis"]
    redis["command"] = redis["command"][:-2]  # no --requirepass
    redis["environment"]["REDISCLI_AUTH"] = "loom-dev"
    redis["healthcheck"]["test"] = ["CMD", "redis-cli", "ping"]
    model["services"]["timescaledb"]["environment"]["POSTGRES_PASSWORD"] = "loom-dev"
    model["services"]["query"]["environment"]["LOOM_DATABASE_URL"] = (
        "postgresql://postgres:loom-dev@timescaledb:5432/loom"
    )
    model["services"]["agent-worker-1"]["environment"]["LOOM_REDIS_URL"] = "redis://redis:6379/0"
    del model["services"]["registry"]["environment"]["LOOM_REDIS_URL"]
    with pytest.raises(
        checks.CheckFailed,
        match=r"(?s)redis: command .* does not --requirepass.*REDISCLI_AUTH.*PONG.*POSTGRES_PASSWORD.*"
        r"agent-worker-1: gets LOOM_REDIS_URL.*registry: LOOM_REDIS_URL None.*query: LOOM_DATABASE_URL",
    ):
        checks.compose_store_auth(model, services, passwords)


def test_compose_check_bites_on_a_store_url_a_service_does_not_need(
    services: list[dict], infra: list[dict]
) -> None:
    model = checks.compose_config(checks.COMPOSE_FILE)
    model["services"]["agent-worker-0"]["environment"]["LOOM_DATABASE_URL"] = "postgresql://x@y/z"
    del model["services"]["dispatcher"]["environment"]["LOOM_REDIS_URL"]
    with pytest.raises(
        checks.CheckFailed,
        match=r"(?s)agent-worker-0: LOOM_DATABASE_URL is set, but timescaledb is not in its needs.*"
        r"dispatcher: LOOM_REDIS_URL is not set, but redis is in its needs",
    ):
        checks.compose_matches_services(model, services, infra)


def test_literal_secrets_check_bites(tmp_path: Path) -> None:
    env = tmp_path / "loom.env"
    env.write_text(
        "# LOOM_X_PASSWORD=in-a-comment\n"
        "LOOM_NATS_URL=nats://nats:4222\n"
        "LOOM_DATABASE_URL=postgresql://postgres:loom-dev@timescaledb:5432/loom\n"
        "LOOM_REDIS_URL=redis://:${LOOM_REDIS_PASSWORD}@redis:6379/0\n"
        "LOOM_SOME_PASSWORD=\n"
    )
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "x-pw: &pw ${LOOM_REDIS_PASSWORD:?no Redis password: run it}\n"
        "services:\n"
        "  redis:\n"
        '    command: ["redis-server", "--requirepass", "hunter2"]\n'
        "    environment:\n"
        "      REDISCLI_AUTH: *pw\n"
        "      POSTGRES_PASSWORD: loom-dev # a development default\n"
        "      LOOM_REDIS_URL: ${LOOM_COMPOSE_REDIS_URL:-redis://:fallback@127.0.0.1:6379/0}\n"
        "      - LOOM_API_KEYS=loom_abc\n"
    )
    with pytest.raises(checks.CheckFailed) as failed:
        checks.no_literal_secrets([env, compose])
    found = re.findall(r"(\S+\.(?:env|yaml):\d+)", str(failed.value))
    assert found == ["loom.env:3", "compose.yaml:4", "compose.yaml:7", "compose.yaml:8", "compose.yaml:9"]
    for path in (checks.COMPOSE_FILE, COMPOSE_DIR / "loom.env"):  # and the real files, broken
        broken = tmp_path / "real" / path.name
        broken.parent.mkdir(exist_ok=True)
        text = path.read_text()
        if path.suffix == ".env":
            text += "LOOM_DATABASE_URL=postgresql://postgres:loom-dev@timescaledb:5432/loom\n"
        else:
            text = text.replace("POSTGRES_PASSWORD: *postgres-password", "POSTGRES_PASSWORD: loom-dev", 1)
        broken.write_text(text)
        with pytest.raises(checks.CheckFailed, match=rf"{path.name}:\d+"):
            checks.no_literal_secrets([broken])


# ------------------------------------------------------------------ the one command


def _compose_env(*args: str) -> subprocess.CompletedProcess[str]:
    """scripts/compose_env.py in the workspace's environment (it has loom_protocol; this has not)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    uv = shutil.which("uv", path=env.get("PATH"))
    assert uv, "uv is not on PATH"
    return subprocess.run(
        [uv, "run", "--frozen", "--quiet", "python", "scripts/compose_env.py", *args],
        cwd=checks.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_one_command_writes_every_password_compose_needs(services: list[dict], tmp_path: Path) -> None:
    path = tmp_path / "compose.env"
    result = _compose_env(str(path))
    assert result.returncode == 0, f"scripts/compose_env.py failed:\n{result.stdout}{result.stderr}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = _read_env(path)
    nats = {k: v for k, v in values.items() if k.startswith("LOOM_NATS_PASSWORD_")}
    store = {k: v for k, v in values.items() if k in checks.STORE_PASSWORDS}
    assert sorted(nats) == sorted(checks.sample_nats_passwords())
    assert sorted(store) == sorted(checks.STORE_PASSWORDS)
    assert len(set(values.values())) == len(values)
    for var, password in values.items():  # letters and digits: safe in a URL and to nats-server
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{31}", password), var
    # the file is all compose needs: the stack resolves with it and passes the checks
    model = checks.compose_config(
        checks.COMPOSE_FILE, profiles=(), nats_passwords=nats, store_passwords=store
    )
    checks.compose_nats_auth(model, services, nats)
    checks.compose_store_auth(model, services, store)

    # a second run keeps the passwords and the file's other settings, and replaces an unusable one
    with path.open("a") as out:
        out.write("LOOM_BIND_ADDRESS=0.0.0.0\n")
    text = path.read_text().replace(store["LOOM_POSTGRES_PASSWORD"], "loom-dev")
    path.write_text(text)
    result = _compose_env(str(path))
    assert result.returncode == 0, result.stderr
    assert "LOOM_POSTGRES_PASSWORD" in result.stderr  # says which one it made anew
    again = _read_env(path)
    assert again["LOOM_BIND_ADDRESS"] == "0.0.0.0"
    assert again["LOOM_REDIS_PASSWORD"] == store["LOOM_REDIS_PASSWORD"]
    assert {k: again[k] for k in nats} == nats
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{31}", again["LOOM_POSTGRES_PASSWORD"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compose.env"]  # no temporary file left
