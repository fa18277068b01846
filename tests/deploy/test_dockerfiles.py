"""Dockerfiles: hadolint plus Loom's own policy, on the real files and on broken copies."""

from __future__ import annotations

from pathlib import Path

import checks
import pytest

SERVICES = checks.load_services()
IDS = [s["name"] for s in SERVICES]


def dockerfile_of(svc: dict) -> Path:
    return checks.REPO / svc["dir"] / "Dockerfile"


@pytest.mark.parametrize("svc", SERVICES, ids=IDS)
def test_hadolint(svc: dict) -> None:
    checks.hadolint(dockerfile_of(svc))


@pytest.mark.parametrize("svc", SERVICES, ids=IDS)
def test_policy(svc: dict) -> None:
    checks.dockerfile_policy(dockerfile_of(svc), svc)


def test_dockerfiles_follow_one_pattern(services: list[dict]) -> None:
    checks.dockerfiles_alike({s["name"]: dockerfile_of(s) for s in services}, services)


def test_dockerignore() -> None:
    checks.dockerignore(checks.REPO / ".dockerignore")


# ------------------------------------------------------------------ the checks bite


@pytest.fixture
def dispatcher(services: list[dict]) -> dict:
    return next(s for s in services if s["name"] == "dispatcher")


def broken(tmp_path: Path, svc: dict, old: str, new: str) -> Path:
    text = dockerfile_of(svc).read_text()
    assert old in text, f"sample anchor {old!r} not found in {svc['dir']}/Dockerfile"
    path = tmp_path / "Dockerfile"
    path.write_text(text.replace(old, new, 1))
    return path


def test_hadolint_bites_on_unpinned_apt_get(tmp_path: Path, dispatcher: dict) -> None:
    path = broken(
        tmp_path, dispatcher, "RUN groupadd", "RUN apt-get update && apt-get install -y curl\nRUN groupadd"
    )
    with pytest.raises(checks.CheckFailed, match="DL3008"):
        checks.hadolint(path)


def test_hadolint_bites_on_unpinned_pip(tmp_path: Path, dispatcher: dict) -> None:
    path = broken(
        tmp_path, dispatcher, "pip install --no-cache-dir uv==0.13.9", "pip install --no-cache-dir uv"
    )
    with pytest.raises(checks.CheckFailed, match="DL3013"):
        checks.hadolint(path)


def test_hadolint_bites_on_root_user(tmp_path: Path, dispatcher: dict) -> None:
    path = broken(tmp_path, dispatcher, "USER 10001:10001", "USER root")
    with pytest.raises(checks.CheckFailed, match="DL3002"):
        checks.hadolint(path)


def test_policy_bites_on_add_url(tmp_path: Path, dispatcher: dict) -> None:
    path = broken(
        tmp_path,
        dispatcher,
        "WORKDIR /app\n",
        "WORKDIR /app\nADD https://example.invalid/tool.tar.gz /opt/\n",
    )
    with pytest.raises(checks.CheckFailed, match="ADD https://example.invalid"):
        checks.dockerfile_policy(path, dispatcher)


def test_policy_bites_on_missing_user(tmp_path: Path, dispatcher: dict) -> None:
    path = broken(tmp_path, dispatcher, "USER 10001:10001\n", "")
    with pytest.raises(checks.CheckFailed, match="sets no USER"):
        checks.dockerfile_policy(path, dispatcher)


def test_policy_bites_on_single_step_sync(tmp_path: Path, dispatcher: dict) -> None:
    path = broken(tmp_path, dispatcher, "--no-install-workspace ", "")
    with pytest.raises(checks.CheckFailed, match="no dependency step"):
        checks.dockerfile_policy(path, dispatcher)


def test_policy_bites_on_wrong_cmd_and_port(tmp_path: Path, dispatcher: dict) -> None:
    path = broken(tmp_path, dispatcher, 'CMD ["python", "-m", "loom_dispatcher"]', "CMD python -m loom_query")
    path.write_text(path.read_text().replace("EXPOSE 8001", "EXPOSE 8004"))
    with pytest.raises(checks.CheckFailed, match=r"(?s)does not EXPOSE 8001.*CMD python -m loom_query"):
        checks.dockerfile_policy(path, dispatcher)


def test_pattern_check_bites_on_drift(tmp_path: Path, services: list[dict]) -> None:
    files = {s["name"]: dockerfile_of(s) for s in services}
    drifted = tmp_path / "Dockerfile"
    drifted.write_text(files["query"].read_text().replace("--retries=3", "--retries=5"))
    files["query"] = drifted
    with pytest.raises(checks.CheckFailed, match="query differs"):
        checks.dockerfiles_alike(files, services)


def test_dockerignore_check_bites(tmp_path: Path) -> None:
    path = tmp_path / ".dockerignore"
    path.write_text((checks.REPO / ".dockerignore").read_text().replace("**/.venv\n", "") + "uv.lock\n")
    with pytest.raises(checks.CheckFailed, match=r"(?s)'\*\*/\.venv' is not ignored.*'uv.lock' is ignored"):
        checks.dockerignore(path)
