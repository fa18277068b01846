"""The Helm chart's NetworkPolicies: every service pod is selected by one, reached only by the
release's pods (and the ingress controller's namespace where the ingress routes to it), and
reaches only DNS, the release's services, what its `needs` names and, for the worker, the LLM
endpoints; the in-chart infrastructure is reached only by the release's pods."""

from __future__ import annotations

import checks
import pytest

INFRA_PORTS = {"nats": 4222, "redis": 6379, "timescaledb": 5432}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _values(which: str) -> dict:
    """The chart's values for a rendering: values.yaml, with values-<which>.yaml over it."""
    base = checks.values_file(checks.CHART_DIR / "values.yaml")
    if which == "default":
        return base
    return _merge(base, checks.values_file(checks.CHART_DIR / f"values-{which}.yaml"))


def _policies(docs: list[dict]) -> dict[str, dict]:
    return {name: doc["spec"] for name, doc in checks.objects(docs, "NetworkPolicy").items()}


def _reached_by_selector(spec: dict) -> dict[str, set[int]]:
    """app name -> ports an egress rule with a named pod selector allows."""
    out: dict[str, set[int]] = {}
    for rule in spec["egress"]:
        for peer in rule.get("to", []):
            name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            if name:
                out.setdefault(name, set()).update(p["port"] for p in rule["ports"])
    return out


@pytest.mark.parametrize("which", ["default", "dev", "prod"])
def test_every_service_pod_is_held_to_what_it_needs(which: str, rendered: dict, services: list[dict]) -> None:
    policies = _policies(rendered[which])
    deployments = checks.objects(rendered[which], "Deployment")
    values = _values(which)
    for svc in services:
        name = svc["name"]
        spec = policies[name]
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items(), name
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        # reached by the release's pods, on its port
        assert spec["ingress"][0]["from"] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "loom"}}}
        ]
        assert spec["ingress"][0]["ports"] == [{"port": svc["port"], "protocol": "TCP"}]
        # the in-chart infrastructure only as its needs say
        needs = set(svc["needs"])
        in_chart = {n for n in INFRA_PORTS if values[n]["enabled"]}
        reached = _reached_by_selector(spec)
        assert {n for n in reached if n in INFRA_PORTS} == needs & in_chart, name
        for need in needs & in_chart:
            assert reached[need] == {INFRA_PORTS[need]}
        # no rule opens everything: each has ports
        assert all(rule.get("ports") for rule in spec["egress"]), name
        wide = [r for r in spec["egress"] if any("ipBlock" in p for p in r.get("to", []))]
        assert (name == "agent-worker") == bool(wide), name  # only the worker reaches out (LLMs)


def test_infrastructure_is_reached_only_by_the_release(rendered: dict) -> None:
    policies = _policies(rendered["default"])
    for name in ("nats", "redis", "timescaledb", "prometheus"):
        spec = policies[name]
        assert spec["policyTypes"] == ["Ingress"]
        assert [peer for rule in spec["ingress"] for peer in rule["from"]] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "loom"}}}
        ]
    assert "nats" not in _policies(rendered["prod"])  # external infrastructure: nothing in the chart


def test_the_ingress_namespace_reaches_only_the_routed_services(rendered: dict) -> None:
    routed = {p["service"] for p in _values("prod")["ingress"]["paths"]}
    for name, spec in _policies(rendered["prod"]).items():
        from_namespace = [r for r in spec["ingress"] if "namespaceSelector" in r["from"][0]]
        assert bool(from_namespace) == (name in routed), name
    assert not any(
        "namespaceSelector" in r["from"][0]
        for spec in _policies(rendered["default"]).values()
        for r in spec["ingress"]
    )  # the ingress is off by default


def test_policies_can_be_turned_off_and_their_settings_bite() -> None:
    docs = checks.render_chart(checks.CHART_DIR, {"networkPolicy": {"enabled": False}})
    assert not checks.objects(docs, "NetworkPolicy")
    bad = {"networkPolicy": {"workerEgress": [{"cidr": "anywhere", "ports": [443]}]}}
    with pytest.raises(checks.CheckFailed, match="cidr"):
        checks.chart_schema(checks.CHART_DIR, bad)
