"""The Helm chart: lint, schema, rendering with default/dev/prod values, and what it must contain."""

from __future__ import annotations

import shutil
from pathlib import Path

import checks
import pytest
import yaml

VALUES = ["default", "dev", "prod"]


def values_for(which: str, dev_values: dict, prod_values: dict) -> dict:
    return {"default": {}, "dev": dev_values, "prod": prod_values}[which]


@pytest.mark.parametrize("which", VALUES)
def test_lint_strict(which: str, dev_values: dict, prod_values: dict) -> None:
    checks.chart_lint(checks.CHART_DIR, values_for(which, dev_values, prod_values))


@pytest.mark.parametrize("which", VALUES)
def test_schema_accepts(which: str, dev_values: dict, prod_values: dict) -> None:
    checks.chart_schema(checks.CHART_DIR, values_for(which, dev_values, prod_values))


@pytest.mark.parametrize("which", ["default", "prod"])
def test_deployments_are_the_services(which: str, rendered: dict, services: list[dict]) -> None:
    checks.chart_matches_services(rendered[which], services, infra_enabled=which != "prod")


def test_values_match_services(services: list[dict]) -> None:
    values = yaml.safe_load((checks.CHART_DIR / "values.yaml").read_text())["services"]
    assert sorted(values) == sorted(s["name"] for s in services)
    for svc in services:
        v = values[svc["name"]]
        got = {k: v.get(k) for k in ("image", "port", "replicas", "needs")}
        want = {k: svc[k] for k in ("image", "port", "replicas", "needs")}
        assert got == want, f"values.yaml services.{svc['name']} {got} != services.toml {want}"


def test_prod_uses_external_infrastructure(rendered: dict, prod_values: dict) -> None:
    docs = rendered["prod"]
    present = set(checks.workloads(docs)) & set(checks.INFRA_WORKLOADS)
    assert not present, f"values-prod.yaml still renders {sorted(present)}"
    config = checks.objects(docs, "ConfigMap")["loom-config"]["data"]
    secret = checks.objects(docs, "Secret")["loom-secrets"]["stringData"]
    ext = prod_values["externalUrls"]
    assert config["LOOM_NATS_URL"] == ext["nats"]
    assert secret["LOOM_REDIS_URL"] == ext["redis"]
    assert secret["LOOM_DATABASE_URL"] == ext["database"]
    assert "LOOM_DATABASE_URL" not in config and "LOOM_REDIS_URL" not in config, "URLs with passwords"
    assert "REDIS_PASSWORD" not in secret  # no in-chart Redis


def test_default_uses_in_chart_infrastructure(rendered: dict) -> None:
    docs = rendered["default"]
    wl = checks.workloads(docs)
    assert {"nats", "timescaledb", "redis"} <= set(wl)
    assert wl["nats"]["kind"] == "StatefulSet"
    nats_args = checks.pod_spec(wl["nats"])["containers"][0]["args"]
    assert nats_args == ["-c", "/etc/nats/loom/nats.conf"], nats_args
    nats_conf = checks.objects(docs, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "jetstream {\n  store_dir: /data\n}" in nats_conf, nats_conf  # JetStream on the data volume
    config = checks.objects(docs, "ConfigMap")["loom-config"]["data"]
    assert config["LOOM_NATS_URL"] == "nats://nats:4222"
    secret = checks.objects(docs, "Secret")["loom-secrets"]["stringData"]
    assert secret["LOOM_REDIS_URL"] == "redis://:loom-dev@redis:6379/0"
    assert secret["LOOM_DATABASE_URL"].endswith("@timescaledb:5432/loom")


@pytest.mark.parametrize("which", VALUES)
def test_worker_shuts_down_gracefully(which: str, rendered: dict) -> None:
    worker = checks.workloads(rendered[which])["agent-worker"]
    spec = checks.pod_spec(worker)
    c = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    drain = float(env["LOOM_DRAIN_TIMEOUT_S"])
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep", pre_stop
    assert spec["terminationGracePeriodSeconds"] > drain + float(pre_stop[1]), (
        f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} must exceed "
        f"preStop sleep {pre_stop[1]} + LOOM_DRAIN_TIMEOUT_S {drain}"
    )
    assert env.get("LOOM_INSTANCE_ID") is None
    instance = next(e for e in c["env"] if e["name"] == "LOOM_INSTANCE_ID")
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("which", ["default", "prod"])
def test_pods_are_locked_down(which: str, rendered: dict, services: list[dict]) -> None:
    wl = checks.workloads(rendered[which])
    for svc in services:
        spec = checks.pod_spec(wl[svc["name"]])
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        c = spec["containers"][0]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in vols[mounts["/tmp"]], f"{svc['name']}: /tmp is not an emptyDir"
        assert c["resources"]["requests"] and c["resources"]["limits"]


@pytest.mark.parametrize("which", ["default", "prod"])
def test_autoscaling_and_disruption_budgets(which: str, rendered: dict, services: list[dict]) -> None:
    docs = rendered[which]
    hpas = checks.objects(docs, "HorizontalPodAutoscaler")
    assert {"agent-worker", "dispatcher"} <= set(hpas)
    wl = checks.workloads(docs)
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in wl
        assert "replicas" not in wl[target["name"]]["spec"], (
            f"{name}: the HPA owns replicas, the Deployment must not set them"
        )
    pdbs = checks.objects(docs, "PodDisruptionBudget")
    for svc in services:
        pdb = pdbs[svc["name"]]
        labels = wl[svc["name"]]["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())


def test_ingress_is_off_by_default_and_has_tls_in_prod(rendered: dict) -> None:
    assert "loom" not in checks.objects(rendered["default"], "Ingress")
    prod = checks.objects(rendered["prod"], "Ingress")["loom"]
    assert prod["spec"]["tls"] == [{"secretName": "loom-tls", "hosts": ["loom.example.com"]}]


def test_ingress_routes(rendered: dict) -> None:
    ingress = checks.objects(rendered["prod"], "Ingress")["loom"]
    paths = [
        (p["path"], p["pathType"], p["backend"]["service"]["name"])
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    ]
    route = {path: svc for path, _, svc in paths}
    assert route["/api/tasks"] == "dispatcher"
    assert route["/api/replay"] == "replay"
    assert route["/api"] == "query"
    assert route["/ws"] == "query"
    assert route["/api/keys"] == "dispatcher"
    assert route["/v1/traces"] == "ingest"
    assert route["/"] == "query"
    assert all(kind == "Prefix" for _, kind, _ in paths)
    order = [p for p, _, _ in paths]
    for i, earlier in enumerate(order):
        for later in order[i + 1 :]:
            assert not later.startswith(earlier.rstrip("/") + "/"), f"{later} must come before {earlier}"
    services = checks.objects(rendered["default"], "Service")
    assert all(svc in services for _, _, svc in paths)


def test_chart_prometheus_config_is_the_shared_file() -> None:
    chart_copy = (checks.CHART_DIR / "files" / "prometheus.yml").read_text()
    assert chart_copy == checks.PROMETHEUS_YML.read_text(), (
        "deploy/k8s/loom/files/prometheus.yml differs from deploy/prometheus/prometheus.yml: "
        "copy the shared file into the chart"
    )


def test_agent_worker_service_is_headless(rendered: dict) -> None:
    svc = checks.objects(rendered["default"], "Service")["agent-worker"]
    assert svc["spec"].get("clusterIP") == "None", "Prometheus DNS discovery needs every worker pod"


# ------------------------------------------------------------------ the checks bite


def test_schema_and_lint_bite_on_wrong_type() -> None:
    bad = {"services": {"agent-worker": {"replicas": "two"}}}
    with pytest.raises(checks.CheckFailed, match="replicas.*got string, want integer"):
        checks.chart_schema(checks.CHART_DIR, bad)
    with pytest.raises(checks.CheckFailed, match="replicas"):
        checks.chart_lint(checks.CHART_DIR, bad)
    with pytest.raises(checks.CheckFailed, match="replicas"):
        checks.render_chart(checks.CHART_DIR, bad)


def test_schema_bites_on_unknown_key_and_missing_external_url() -> None:
    with pytest.raises(checks.CheckFailed, match="replica"):
        checks.chart_schema(checks.CHART_DIR, {"services": {"dispatcher": {"replica": 2}}})
    with pytest.raises(checks.CheckFailed, match="externalUrls/nats"):
        checks.chart_schema(checks.CHART_DIR, {"nats": {"enabled": False}})


def test_render_bites_on_short_grace_period() -> None:
    bad = {"services": {"agent-worker": {"terminationGracePeriodSeconds": 20}}}
    with pytest.raises(checks.CheckFailed, match="terminationGracePeriodSeconds"):
        checks.render_chart(checks.CHART_DIR, bad)


def test_render_bites_on_ingress_to_unknown_service() -> None:
    bad = {"ingress": {"enabled": True, "paths": [{"path": "/api", "service": "querry"}]}}
    with pytest.raises(checks.CheckFailed, match="querry"):
        checks.render_chart(checks.CHART_DIR, bad)


def test_lint_bites_on_broken_template(tmp_path: Path) -> None:
    chart = tmp_path / "loom"
    shutil.copytree(checks.CHART_DIR, chart)
    hpa = chart / "templates" / "hpa.yaml"
    hpa.write_text(hpa.read_text().replace("{{- end }}\n{{- end }}", "{{- end }}\n"))
    with pytest.raises(checks.CheckFailed, match="hpa.yaml"):
        checks.chart_lint(chart)


def test_consistency_bites_on_missing_service(rendered: dict, services: list[dict]) -> None:
    docs = [d for d in rendered["default"] if d["metadata"]["name"] != "registry"]
    with pytest.raises(checks.CheckFailed, match="registry"):
        checks.chart_matches_services(docs, services, infra_enabled=True)
    extra = [*services, {**services[1], "name": "scheduler", "image": "loom/scheduler", "port": 8009}]
    with pytest.raises(checks.CheckFailed, match="scheduler"):
        checks.chart_matches_services(rendered["prod"], extra, infra_enabled=False)


# ------------------------------------------------------------------ the agent worker's settings


def _worker_container(docs: list[dict], name: str = "agent-worker") -> dict:
    return dict(checks.pod_spec(checks.workloads(docs)[name])["containers"][0])


def test_worker_takes_agents_image_and_llm_from_values() -> None:
    docs = checks.render_chart(
        checks.CHART_DIR,
        {
            "worker": {
                "agents": "echo,loom_unit_converter:agent",
                "image": {"repository": "registry.example.com/team/loom-worker", "tag": "1.2.3"},
                "llm": {
                    "provider": "openai",
                    "baseUrl": "http://vllm:8000/v1",
                    "model": "qwen2.5",
                    "apiKey": {"existingSecret": "team-llm", "secretKey": "api-key"},
                },
            }
        },
    )
    c = _worker_container(docs)
    assert c["image"] == "registry.example.com/team/loom-worker:1.2.3"
    env = {e["name"]: e for e in c["env"]}
    assert env["LOOM_WORKER_AGENTS"]["value"] == "echo,loom_unit_converter:agent"
    assert env["LOOM_LLM_PROVIDER"]["value"] == "openai"
    assert env["LOOM_LLM_BASE_URL"]["value"] == "http://vllm:8000/v1"
    assert env["LOOM_LLM_MODEL"]["value"] == "qwen2.5"
    assert env["LOOM_LLM_API_KEY"] == {
        "name": "LOOM_LLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "team-llm", "key": "api-key"}},
    }
    assert "loom-llm" not in checks.objects(docs, "Secret"), "existingSecret: the chart makes no Secret"
    others = checks.workloads(docs)
    for name in ("dispatcher", "query"):
        other = checks.pod_spec(others[name])["containers"][0]
        assert "LOOM_LLM_API_KEY" not in {e["name"] for e in other["env"]}, f"{name} gets the LLM key"
        assert other["image"].startswith("loom/"), other["image"]


def test_worker_key_from_a_value_goes_through_a_chart_made_secret() -> None:
    docs = checks.render_chart(
        checks.CHART_DIR, {"namePrefix": "t-", "worker": {"llm": {"apiKey": {"value": "sk-test-123"}}}}
    )
    c = _worker_container(docs, "t-agent-worker")
    ref = next(e for e in c["env"] if e["name"] == "LOOM_LLM_API_KEY")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "t-loom-llm", "key": "LOOM_LLM_API_KEY"}
    checks.kube_validate(docs)
    secret = checks.objects(docs, "Secret")["t-loom-llm"]
    assert secret["stringData"] == {"LOOM_LLM_API_KEY": "sk-test-123"}
    for d in docs:  # the key is in that Secret only: never in a ConfigMap or a pod spec
        if d is not secret:
            assert "sk-test-123" not in yaml.safe_dump(d), f"{d['kind']} {d['metadata']['name']} has the key"


def test_worker_defaults_run_the_demo_agents_on_the_loom_image(rendered: dict) -> None:
    for which in VALUES:
        c = _worker_container(rendered[which])
        env = {e["name"]: e for e in c["env"]}
        assert env["LOOM_WORKER_AGENTS"]["value"] == "echo,calculator,orchestrator"
        assert "LOOM_LLM_API_KEY" not in env and "LOOM_LLM_PROVIDER" not in env
        assert checks.image_repository(c["image"]) == "loom/agent-worker"
    tagged = checks.render_chart(checks.CHART_DIR, {"worker": {"image": {"tag": "dev-7"}}})
    assert _worker_container(tagged)["image"] == "loom/agent-worker:dev-7"


def test_worker_settings_bite() -> None:
    both = {"worker": {"llm": {"apiKey": {"existingSecret": "mine", "value": "sk"}}}}
    with pytest.raises(checks.CheckFailed, match="apiKey"):
        checks.chart_schema(checks.CHART_DIR, both)
    with pytest.raises(checks.CheckFailed, match="apiKey"):
        checks.render_chart(checks.CHART_DIR, both)
    twice = {"services": {"agent-worker": {"env": {"LOOM_WORKER_AGENTS": "echo"}}}}
    with pytest.raises(checks.CheckFailed, match="worker.agents"):
        checks.render_chart(checks.CHART_DIR, twice)
    with pytest.raises(checks.CheckFailed, match="agents"):
        checks.chart_schema(checks.CHART_DIR, {"worker": {"agents": ""}})
    with pytest.raises(checks.CheckFailed, match="baseUrl"):
        checks.chart_schema(checks.CHART_DIR, {"worker": {"llm": {"baseUrl": "vllm:8000"}}})


@pytest.mark.parametrize("which", ["default", "dev"])
def test_in_chart_redis_keeps_an_append_only_file(which: str, rendered: dict) -> None:
    docs = rendered[which]
    spec = checks.pod_spec(checks.workloads(docs)["redis"])
    args = spec["containers"][0]["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags == {
        "--dir": "/data",
        "--save": "",
        "--appendonly": "yes",
        "--appendfsync": "everysec",
        "--requirepass": "$(REDIS_PASSWORD)",
    }, args
    (data,) = [v for v in spec["volumes"] if v["name"] == "data"]
    if which == "default":  # a claim of its own; dev keeps the AOF on an emptyDir
        assert data["persistentVolumeClaim"]["claimName"] in checks.objects(docs, "PersistentVolumeClaim")
    else:
        assert "emptyDir" in data


def test_in_chart_redis_wants_the_password_of_the_secret(rendered: dict, services: list[dict]) -> None:
    docs = rendered["default"]
    redis = checks.pod_spec(checks.workloads(docs)["redis"])["containers"][0]
    assert redis["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
    key = {"name": "loom-secrets", "key": "REDIS_PASSWORD"}
    assert from_secret == {"REDIS_PASSWORD": key, "REDISCLI_AUTH": key}
    deployments = checks.objects(docs, "Deployment")
    for svc in services:
        container = checks.pod_spec(deployments[svc["name"]])["containers"][0]
        env = {e["name"]: e for e in container.get("env", [])}
        if "redis" in svc["needs"]:
            assert env["LOOM_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "LOOM_REDIS_URL", svc["name"]
        else:
            assert "LOOM_REDIS_URL" not in env, svc["name"]
    # the password appears in the Secret only
    text = yaml.safe_dump([d for d in docs if d["kind"] != "Secret"])
    assert "loom-dev@redis" not in text
    none = checks.render_chart(checks.CHART_DIR, {"redis": {"password": ""}})
    assert (
        checks.objects(none, "Secret")["loom-secrets"]["stringData"]["LOOM_REDIS_URL"]
        == "redis://redis:6379/0"
    )
    assert "--requirepass" not in checks.pod_spec(checks.workloads(none)["redis"])["containers"][0]["args"]
