"""The one parameterised Dockerfile: hadolint plus Loom's own policy, on the real file and on
broken copies. compose and the Tiltfile pass its build args; their tests check the args."""

from __future__ import annotations

import re
from pathlib import Path

import checks
import pytest


def test_hadolint() -> None:
    checks.hadolint(checks.DOCKERFILE)


def test_policy(services: list[dict]) -> None:
    checks.dockerfile_policy(checks.DOCKERFILE, services)


def test_one_dockerfile_for_every_service() -> None:
    copies = sorted(str(p.relative_to(checks.REPO)) for p in (checks.REPO / "services").glob("*/Dockerfile"))
    assert copies == [], f"per-service Dockerfiles are back: {copies} (build deploy/Dockerfile with args)"


def test_build_args_of_a_service(services: list[dict]) -> None:
    worker = next(s for s in services if s["name"] == "agent-worker")
    assert checks.build_args(worker) == {
        "SERVICE": "agent_worker",
        "PACKAGE": "loom-agent-worker",
        "MODULE": "loom_agent_worker",
        "PORT": "8100",
    }


def test_dockerignore() -> None:
    checks.dockerignore(checks.REPO / ".dockerignore")


# ------------------------------------------------------------------ the checks bite


def broken(tmp_path: Path, old: str, new: str) -> Path:
    text = checks.DOCKERFILE.read_text()
    assert old in text, f"sample anchor {old!r} not found in deploy/Dockerfile"
    path = tmp_path / "Dockerfile"
    path.write_text(text.replace(old, new, 1))
    return path


def test_hadolint_bites_on_unpinned_apt_get(tmp_path: Path) -> None:
    path = broken(tmp_path, "RUN groupadd", "RUN apt-get update && apt-get install -y curl\nRUN groupadd")
    with pytest.raises(checks.CheckFailed, match="DL3008"):
        checks.hadolint(path)


def test_hadolint_bites_on_unpinned_pip(tmp_path: Path) -> None:
    path = broken(tmp_path, "pip install --no-cache-dir uv==0.13.9", "pip install --no-cache-dir uv")
    with pytest.raises(checks.CheckFailed, match="DL3013"):
        checks.hadolint(path)


def test_hadolint_bites_on_root_user(tmp_path: Path) -> None:
    path = broken(tmp_path, "USER 10001:10001", "USER root")
    with pytest.raises(checks.CheckFailed, match="DL3002"):
        checks.hadolint(path)


def test_policy_bites_on_buildkit_syntax(tmp_path: Path, services: list[dict]) -> None:
    path = broken(tmp_path, "ARG BASE_IMAGE", "# syntax=docker/dockerfile:1.7\nARG BASE_IMAGE")
    path.write_text(
        path.read_text().replace("RUN uv sync", "RUN --mount=type=cache,target=/root/.cache/uv uv sync")
    )
    with pytest.raises(checks.CheckFailed, match=r"(?s)syntax=.*RUN --mount"):
        checks.dockerfile_policy(path, services)


def test_policy_bites_on_add_url(tmp_path: Path, services: list[dict]) -> None:
    path = broken(tmp_path, "WORKDIR /app\n", "WORKDIR /app\nADD https://example.invalid/tool.tar.gz /opt/\n")
    with pytest.raises(checks.CheckFailed, match="ADD https://example.invalid"):
        checks.dockerfile_policy(path, services)


def test_policy_bites_on_missing_user(tmp_path: Path, services: list[dict]) -> None:
    path = broken(tmp_path, "USER 10001:10001\n", "")
    with pytest.raises(checks.CheckFailed, match="sets no USER"):
        checks.dockerfile_policy(path, services)


def test_policy_bites_on_single_step_sync(tmp_path: Path, services: list[dict]) -> None:
    path = broken(tmp_path, "--no-install-workspace ", "")
    with pytest.raises(checks.CheckFailed, match="no dependency step"):
        checks.dockerfile_policy(path, services)


def test_policy_bites_on_missing_member_and_base(tmp_path: Path, services: list[dict]) -> None:
    path = broken(tmp_path, "COPY services/query/pyproject.toml services/query/\n", "")
    path.write_text(path.read_text().replace("python:3.11-slim-bookworm", "python:3.13-alpine"))
    with pytest.raises(
        checks.CheckFailed, match=r"(?s)BASE_IMAGE defaults to 'python:3.13-alpine'.*services/query/pyproject"
    ):
        checks.dockerfile_policy(path, services)


def test_policy_bites_on_fixed_cmd_and_port(tmp_path: Path, services: list[dict]) -> None:
    path = broken(
        tmp_path, 'CMD ["sh", "-c", "exec python -m \\"$LOOM_MODULE\\""]', "CMD python -m loom_query"
    )
    path.write_text(path.read_text().replace("EXPOSE ${PORT}", "EXPOSE 8004"))
    with pytest.raises(checks.CheckFailed, match=r"(?s)does not EXPOSE \$\{PORT\}.*not in exec form"):
        checks.dockerfile_policy(path, services)


def test_dockerignore_check_bites(tmp_path: Path) -> None:
    path = tmp_path / ".dockerignore"
    path.write_text((checks.REPO / ".dockerignore").read_text().replace("**/.venv\n", "") + "uv.lock\n")
    with pytest.raises(checks.CheckFailed, match=r"(?s)'\*\*/\.venv' is not ignored.*'uv.lock' is ignored"):
        checks.dockerignore(path)


def test_package_index_is_a_build_arg_defaulting_to_pypi() -> None:
    text = checks.DOCKERFILE.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "ARG PIP_INDEX_URL=https://pypi.org/simple" in code
    assert "ARG UV_INDEX_URL=https://pypi.org/simple" in code
    urls = {u for u in re.findall(r"https?://[^\s\"']+", code) if not u.startswith("http://127.0.0.1:")}
    assert urls == {"https://pypi.org/simple"}, f"an index or URL written into the Dockerfile: {urls}"


def test_service_args_come_after_the_shared_layers() -> None:
    # The legacy builder keys a RUN's cache on the build args declared before it: the steps all
    # services share (installing uv) must come before ARG SERVICE/PACKAGE to be built once.
    text = checks.DOCKERFILE.read_text()
    assert text.index("RUN pip install") < text.index("ARG SERVICE") < text.index("RUN test -n")
