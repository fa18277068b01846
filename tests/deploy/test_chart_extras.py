"""The Helm chart's API keys, NATS cluster and `helm test` hook: rendered, validated, and shown to bite."""

from __future__ import annotations

import checks
import pytest
import yaml


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _test_pod(docs: list[dict], name: str = "loom-test-task") -> dict:
    return checks.objects(docs, "Pod")[name]


def test_helm_test_pod_submits_a_task_and_reads_its_events(rendered: dict) -> None:
    for which in ("default", "dev", "prod"):
        pod = _test_pod(rendered[which])
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert "hook-succeeded" in pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
        assert pod["spec"]["restartPolicy"] == "Never"
        c = pod["spec"]["containers"][0]
        env = _env(c)
        assert env["LOOM_TEST_DISPATCHER_URL"]["value"] == "http://dispatcher:8001"
        assert env["LOOM_TEST_QUERY_URL"]["value"] == "http://query:8004"
        script = c["command"][-1]
        assert "/api/tasks?wait=" in script and '"/api/tasks/"' in script and "completed" in script
        compile(script, "helm-test", "exec")  # the inline script is valid Python
        if which != "dev":  # values-dev.yaml makes root filesystems writable for Tilt
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert checks.image_repository(c["image"]) == "loom/dispatcher"


def test_api_keys_from_a_value_reach_every_service_through_a_chart_made_secret() -> None:
    docs = checks.render_chart(checks.CHART_DIR, {"namePrefix": "t-", "apiKeys": {"value": "k-one,k-two"}})
    checks.kube_validate(docs)
    secret = checks.objects(docs, "Secret")["t-loom-api-keys"]
    assert secret["stringData"] == {"LOOM_API_KEYS": "k-one,k-two"}
    want = {"name": "t-loom-api-keys", "key": "LOOM_API_KEYS"}
    containers = [checks.pod_spec(w)["containers"][0] for w in checks.workloads(docs).values()]
    containers = [c for c in containers if checks.image_repository(c["image"]).startswith("loom/")]
    containers.append(_test_pod(docs, "t-loom-test-task")["spec"]["containers"][0])
    assert len(containers) == 7
    for c in containers:
        assert _env(c)["LOOM_API_KEYS"]["valueFrom"]["secretKeyRef"] == want, c["name"]
    for d in docs:  # the keys are in that Secret only
        if d is not secret:
            assert "k-one" not in yaml.safe_dump(d), f"{d['kind']} {d['metadata']['name']} has a key"


def test_api_keys_from_an_existing_secret_and_unset(rendered: dict) -> None:
    docs = checks.render_chart(
        checks.CHART_DIR, {"apiKeys": {"existingSecret": "team-keys", "secretKey": "keys"}}
    )
    dispatcher = checks.pod_spec(checks.workloads(docs)["dispatcher"])["containers"][0]
    assert _env(dispatcher)["LOOM_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "team-keys",
        "key": "keys",
    }
    assert "loom-api-keys" not in checks.objects(docs, "Secret")
    for which in ("default", "prod"):
        for w in checks.workloads(rendered[which]).values():
            for c in checks.pod_spec(w)["containers"]:
                assert "LOOM_API_KEYS" not in _env(c), f"{which}: {c['name']} gets LOOM_API_KEYS unset"


def test_nats_cluster() -> None:
    docs = checks.render_chart(checks.CHART_DIR, {"nats": {"cluster": {"enabled": True, "replicas": 5}}})
    checks.kube_validate(docs)
    sts = checks.objects(docs, "StatefulSet")["nats"]
    assert sts["spec"]["replicas"] == 5 and sts["spec"]["serviceName"] == "nats-cluster"
    peers = checks.objects(docs, "Service")["nats-cluster"]
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is True
    args = checks.pod_spec(sts)["containers"][0]["args"]
    routes = args[args.index("--routes") + 1].split(",")
    assert routes == [f"nats://nats-{i}.nats-cluster:6222" for i in range(5)]
    assert args[args.index("--name") + 1] == "$(POD_NAME)" and "--cluster_name" in args
    config = checks.objects(docs, "ConfigMap")["loom-config"]["data"]
    assert config["LOOM_NATS_REPLICAS"] == "3"
    assert config["LOOM_NATS_URL"] == "nats://nats:4222"


def test_single_nats_by_default(rendered: dict) -> None:
    sts = checks.objects(rendered["default"], "StatefulSet")["nats"]
    assert sts["spec"]["replicas"] == 1
    assert "nats-cluster" not in checks.objects(rendered["default"], "Service")
    assert "LOOM_NATS_REPLICAS" not in checks.objects(rendered["default"], "ConfigMap")["loom-config"]["data"]


def test_new_settings_bite() -> None:
    both = {"apiKeys": {"existingSecret": "mine", "value": "k"}}
    with pytest.raises(checks.CheckFailed, match="apiKeys"):
        checks.chart_schema(checks.CHART_DIR, both)
    with pytest.raises(checks.CheckFailed, match="apiKeys"):
        checks.render_chart(checks.CHART_DIR, both)
    with pytest.raises(checks.CheckFailed, match="replicas"):
        checks.chart_schema(checks.CHART_DIR, {"nats": {"cluster": {"enabled": True, "replicas": 2}}})
