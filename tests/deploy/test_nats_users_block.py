"""The committed NATS users blocks cannot go stale: deploy/k8s/loom/files/nats-auth.conf (one user
per role) and deploy/compose/nats-auth.conf (and one per worker instance of services.toml) are
what scripts/nats_auth.py (loom_protocol.nats_auth) renders now. Standard library only, so it
also runs under the workspace's own environment (`uv run --frozen pytest tests/deploy`), where
conftest.py leaves out the tests that need the deploy tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
USERS_BLOCK = REPO / "deploy" / "k8s" / "loom" / "files" / "nats-auth.conf"


COMPOSE_BLOCK = REPO / "deploy" / "compose" / "nats-auth.conf"


def _render_instance_user(out: Path) -> str:
    return _render(out, what="instance-user")


def _render(out: Path, *args: str, what: str = "config") -> str:
    # the workspace's environment has loom_protocol (this project's has not)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    uv = shutil.which("uv", path=env.get("PATH"))
    assert uv, "uv is not on PATH"
    result = subprocess.run(
        [uv, "run", "--frozen", "--quiet", "python", "scripts/nats_auth.py", what, str(out), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"scripts/nats_auth.py config failed:\n{result.stdout}{result.stderr}"
    return out.read_text()


def test_committed_users_block_is_what_the_script_renders(tmp_path: Path) -> None:
    assert USERS_BLOCK.read_text() == _render(tmp_path / "nats-auth.conf"), (
        "deploy/k8s/loom/files/nats-auth.conf is stale: run "
        "`uv run python scripts/nats_auth.py config deploy/k8s/loom/files/nats-auth.conf`"
    )


def test_compose_users_block_is_what_the_script_renders_for_the_instances(tmp_path: Path) -> None:
    services = tomllib.loads((REPO / "deploy" / "services.toml").read_text())["service"]
    workers = [arg for svc in services for i in svc.get("instances", []) for arg in ("--worker", i)]
    assert workers, "services.toml names no worker instances"
    command = "uv run python scripts/nats_auth.py config deploy/compose/nats-auth.conf " + " ".join(workers)
    assert COMPOSE_BLOCK.read_text() == _render(tmp_path / "nats-auth.conf", *workers), (
        f"deploy/compose/nats-auth.conf is stale: run `{command}`"
    )


def test_chart_instance_user_template_is_what_the_script_renders(tmp_path: Path) -> None:
    template = REPO / "deploy" / "k8s" / "loom" / "files" / "nats-worker-user.conf"
    assert template.read_text() == _render_instance_user(tmp_path / "nats-worker-user.conf"), (
        "deploy/k8s/loom/files/nats-worker-user.conf is stale: run "
        "`uv run python scripts/nats_auth.py instance-user deploy/k8s/loom/files/nats-worker-user.conf`"
    )
