"""The Tiltfile, evaluated with starlark-pyo3 and recording stubs of Tilt's builtins."""

from __future__ import annotations

import shutil
from pathlib import Path

import checks
import pytest


def test_tiltfile_matches_chart_and_services(
    tilt: checks.TiltRecord, services: list[dict], infra: list[dict]
) -> None:
    checks.tilt_matches(tilt, services, infra)


def test_tiltfile_reads_the_one_service_list(tilt: checks.TiltRecord, services: list[dict]) -> None:
    assert "deploy/services.toml" in tilt.read_files
    assert [b["ref"] for b in tilt.builds] == [s["image"] for s in services]


def test_tiltfile_declarations(tilt: checks.TiltRecord, services: list[dict]) -> None:
    assert tilt.loads == ["ext://restart_process"]
    assert [c["values"] for c in tilt.helm_calls] == [["deploy/k8s/loom/values-dev.yaml"]]
    resources = {r["new_name"] or r["workload"]: r for r in tilt.resources}
    for svc in services:
        r = resources[svc["name"]]
        assert r["port_forwards"] == [f"{svc['port']}:{svc['port']}"]
        assert set(r["resource_deps"]) >= set(svc["needs"])
        assert r["labels"] == ["loom"]
    for name in ("nats", "timescaledb", "redis"):
        assert resources[name]["labels"] == ["infra"]
    build = next(b for b in tilt.builds if b["ref"] == "loom/dispatcher")
    assert build["live_update"][0] == {
        "step": "fall_back_on",
        "files": [
            "pyproject.toml",
            "uv.lock",
            "services/dispatcher/pyproject.toml",
            "libs/loom_protocol/pyproject.toml",
            "libs/loom_auth/pyproject.toml",
            "libs/loom_nats/pyproject.toml",
        ],
    }
    # the restart marker must be writable by the non-root user (/app is chowned in the Dockerfile)
    assert build["restart_file"].startswith("/app/")
    assert {r["name"] for r in tilt.local_resources} == {"deploy-check"}


def test_dev_chart_allows_live_update(tilt: checks.TiltRecord, services: list[dict]) -> None:
    wl = checks.workloads(tilt.k8s_docs)
    for svc in services:
        sc = checks.pod_spec(wl[svc["name"]])["containers"][0]["securityContext"]
        assert sc["readOnlyRootFilesystem"] is False, (
            "live_update cannot write into a read-only root filesystem"
        )
        assert sc["runAsNonRoot"] is True


# ------------------------------------------------------------------ the checks bite


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """Tiltfile, deploy/ and the source folders it syncs, copied so they can be broken."""
    shutil.copy(checks.TILTFILE, tmp_path / "Tiltfile")
    shutil.copytree(checks.REPO / "deploy", tmp_path / "deploy")
    for svc in checks.load_services():
        (tmp_path / svc["dir"] / "src").mkdir(parents=True)
    (tmp_path / "libs/loom_protocol/src").mkdir(parents=True)
    return tmp_path


def test_bites_on_resource_without_workload(workspace: Path, services: list[dict], infra: list[dict]) -> None:
    tiltfile = workspace / "Tiltfile"
    tiltfile.write_text(tiltfile.read_text() + "\nk8s_resource('scheduler', port_forwards=['8009:8009'])\n")
    rec = checks.eval_tiltfile(tiltfile, workspace)
    with pytest.raises(checks.CheckFailed, match=r"k8s_resource\('scheduler'\) names no workload"):
        checks.tilt_matches(rec, services, infra, root=workspace)


def test_bites_on_image_the_chart_does_not_use(
    workspace: Path, services: list[dict], infra: list[dict]
) -> None:
    toml = workspace / "deploy/services.toml"
    toml.write_text(
        toml.read_text().replace(
            "[[infra]]",
            """[[service]]
name = "scheduler"
dir = "services/scheduler"
package = "loom-scheduler"
module = "loom_scheduler"
port = 8009
image = "loom/scheduler"
replicas = 1
needs = ["nats"]

[[infra]]""",
            1,
        )
    )
    (workspace / "services/scheduler/src").mkdir(parents=True)
    rec = checks.eval_tiltfile(workspace / "Tiltfile", workspace)
    with pytest.raises(
        checks.CheckFailed, match="builds loom/scheduler, which no workload in the chart uses"
    ):
        checks.tilt_matches(rec, checks.load_services(toml), infra, root=workspace)


def test_bites_on_dangling_dependency_and_wrong_values(
    workspace: Path, services: list[dict], infra: list[dict]
) -> None:
    tiltfile = workspace / "Tiltfile"
    text = tiltfile.read_text()
    text = text.replace(
        "resource_deps=svc['needs'] + ['loom-config']", "resource_deps=svc['needs'] + ['postgres']"
    )
    text = text.replace("DEV_VALUES = CHART + '/values-dev.yaml'", "DEV_VALUES = CHART + '/values-prod.yaml'")
    tiltfile.write_text(text)
    rec = checks.eval_tiltfile(tiltfile, workspace)
    with pytest.raises(checks.CheckFailed) as err:
        checks.tilt_matches(rec, services, infra, root=workspace)
    for expected in (
        "does not use deploy/k8s/loom/values-dev.yaml",
        "k8s_resource('nats') names no workload",  # prod values render no NATS
        "resource_deps names 'postgres', which is no resource",
    ):
        assert expected in str(err.value), f"{expected!r} not reported:\n{err.value}"


def test_bites_on_starlark_error(workspace: Path) -> None:
    tiltfile = workspace / "Tiltfile"
    tiltfile.write_text(tiltfile.read_text().replace("SERVICES = read_services(", "SERVICES = read_servics("))
    with pytest.raises(checks.CheckFailed, match="read_servics"):
        checks.eval_tiltfile(tiltfile, workspace)
