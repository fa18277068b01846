"""deploy/services.toml is the one list: the workspace, Prometheus and the dashboard follow it
(compose, chart and Tiltfile are checked against it in their own test files)."""

from __future__ import annotations

import glob
import json
import tomllib
from pathlib import Path

import checks
import pytest


def test_services_toml_matches_workspace(services: list[dict]) -> None:
    checks.check_services_match_workspace(services)


def test_every_service_dir_is_listed(services: list[dict]) -> None:
    dirs = {
        str(p.parent.relative_to(checks.REPO)) for p in (checks.REPO / "services").glob("*/pyproject.toml")
    }
    assert dirs == {s["dir"] for s in services}, (
        "a services/* member is missing from deploy/services.toml (or vice versa)"
    )


def test_needs_name_infrastructure(services: list[dict], infra: list[dict]) -> None:
    names = {i["name"] for i in infra}
    for svc in services:
        assert set(svc["needs"]) <= names, f"{svc['name']} needs {svc['needs']}, infra is {sorted(names)}"


def test_prometheus_scrapes_every_service(services: list[dict]) -> None:
    checks.prometheus_matches_services(checks.PROMETHEUS_YML, services)


def test_dashboard() -> None:
    checks.dashboard(checks.DASHBOARD_JSON)


def test_deploy_checks_are_not_a_workspace_member() -> None:
    root = tomllib.loads((checks.REPO / "pyproject.toml").read_text())
    members = root["tool"]["uv"]["workspace"]["members"]
    matched = {Path(p).resolve() for m in members for p in glob.glob(str(checks.REPO / m))}
    here = Path(__file__).resolve().parent
    assert here not in matched, f"tests/deploy is matched by the root workspace members {members}"
    own = tomllib.loads((here / "pyproject.toml").read_text())
    assert own["tool"]["uv"]["package"] is False
    assert (here / "uv.lock").exists(), "commit tests/deploy/uv.lock"


# ------------------------------------------------------------------ the checks bite


def test_prometheus_check_bites(tmp_path: Path, services: list[dict]) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(checks.PROMETHEUS_YML.read_text().replace("names: [query]", "names: [querry]"))
    with pytest.raises(checks.CheckFailed, match=r"query: targets \['querry:8004'\]"):
        checks.prometheus_matches_services(path, services)


def test_dashboard_check_bites(tmp_path: Path) -> None:
    dash = json.loads(checks.DASHBOARD_JSON.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            target["expr"] = target["expr"].replace("loom_tasks_failed_total", "loom_task_failures")
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(dash))
    with pytest.raises(checks.CheckFailed, match="loom_tasks_failed_total"):
        checks.dashboard(path)
    path.write_text(checks.DASHBOARD_JSON.read_text()[:-10])
    with pytest.raises(checks.CheckFailed, match="not valid JSON"):
        checks.dashboard(path)


def test_workspace_check_bites(tmp_path: Path, services: list[dict]) -> None:
    wrong = [dict(s) for s in services]
    wrong[1]["package"] = "loom-dispatch"
    wrong[2]["module"] = "loom_registri"
    with pytest.raises(
        checks.CheckFailed,
        match=r"(?s)names 'loom-dispatcher'.*no package services/registry/src/loom_registri",
    ):
        checks.check_services_match_workspace(wrong)


def test_services_toml_check_bites(tmp_path: Path) -> None:
    path = tmp_path / "services.toml"
    path.write_text(
        checks.SERVICES_TOML.read_text()
        .replace("port = 8002", 'port = "8002"')
        .replace("port = 8004", "port = 8003")
    )
    with pytest.raises(checks.CheckFailed, match=r"(?s)port must be a int.*duplicate port 8003"):
        checks.load_services(path)
