"""NATS with Loom's users in compose and the Helm chart: every NATS server (compose's, the
chart's, a cluster's) loads the committed users block with every user's password, every service
connects as its role, and the configurations parse with the nats-server of the images' version.
That the block is what scripts/nats_auth.py renders now: test_nats_users_block.py."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import checks
import pytest
import yaml

ROLES = ["admin", "dispatcher", "registry", "worker", "ingest", "query", "replay", "client"]
COMPOSE_DIR = checks.REPO / "deploy" / "compose"
CLUSTER_FILE = COMPOSE_DIR / "compose.cluster.yaml"


def _nats_env(docs: list[dict], secret: str = "loom-secrets") -> dict[str, str]:
    """The NATS passwords of the chart's Secret, as the server's environment."""
    data = checks.objects(docs, "Secret")[secret]["stringData"]
    return {k: v for k, v in data.items() if k.startswith("LOOM_NATS_PASSWORD_")}


def _write_chart_config(docs: list[dict], directory: Path) -> Path:
    """The ConfigMap nats-config as the files the server sees in /etc/nats/loom."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in checks.objects(docs, "ConfigMap")["nats-config"]["data"].items():
        (directory / name).write_text(text)
    return directory / "nats.conf"


def _without_store_dir(conf: Path) -> Path:
    """The configuration with /data (the containers' store) replaced by a directory beside it."""
    text = conf.read_text()
    assert "store_dir: /data" in text
    conf.write_text(text.replace("store_dir: /data", f'store_dir: "{conf.parent / "store"}"'))
    return conf


# ------------------------------------------------------------------ the users block


def test_users_block_has_one_user_per_role_named_after_it() -> None:
    users = checks.nats_users(checks.NATS_AUTH_CONF.read_text())
    assert list(users) == ROLES
    assert all(var == checks.nats_password_variable(user) for user, var in users.items())
    assert set(checks.NATS_USERS.values()) <= set(ROLES)
    # the chart's own list of roles (its Secret's keys, the server's variables) is the same
    helpers = (checks.CHART_DIR / "templates" / "_helpers.tpl").read_text()
    listed = re.search(r'define "loom.natsRoles" -}}([^{]*){{-', helpers)
    assert listed and listed.group(1).split() == ROLES


def test_compose_users_block_adds_a_user_bound_to_each_worker_instance(services: list[dict]) -> None:
    instances = [i for svc in services for i in svc.get("instances", [])]
    assert instances == ["worker-0", "worker-1"]
    users = checks.nats_users(checks.COMPOSE_NATS_AUTH_CONF.read_text())
    assert list(users) == ROLES + instances
    text = checks.COMPOSE_NATS_AUTH_CONF.read_text()
    for instance in instances:  # its own heartbeats, reports, events and assignments only
        entry = next(line for line in text.splitlines() if f'{{user: "{instance}"' in line)
        for subject in ("loom.registry.heartbeat", "loom.task.assigned", "loom.task.report"):
            assert f'"{subject}.{instance}' in entry and f'"{subject}.*' not in entry, (instance, subject)
        assert f'"loom.event.worker.{instance}.>"' in entry and '"loom.event.worker.*.>"' not in entry


# ------------------------------------------------------------------ compose


def test_compose_runs_nats_with_the_users(services: list[dict]) -> None:
    passwords = checks.sample_nats_passwords()
    model = checks.compose_config(checks.COMPOSE_FILE, profiles=(), nats_passwords=passwords)
    checks.compose_nats_auth(model, services, passwords)
    nats = model["services"]["nats"]
    assert [p["host_ip"] for p in nats["ports"]] == ["127.0.0.1", "127.0.0.1"]


def test_compose_cluster_nodes_run_with_the_users(services: list[dict]) -> None:
    passwords = checks.sample_nats_passwords()
    model = checks.compose_config(
        checks.COMPOSE_FILE, overrides=[CLUSTER_FILE], profiles=(), nats_passwords=passwords
    )
    checks.compose_nats_auth(model, services, passwords, nodes=("nats", "nats-2", "nats-3"))


def test_compose_host_services_connect_as_their_roles(services: list[dict]) -> None:
    passwords = checks.sample_nats_passwords()
    model = checks.compose_config(
        checks.COMPOSE_FILE, overrides=[checks.COMPOSE_HOST_FILE], profiles=(), nats_passwords=passwords
    )
    checks.compose_nats_auth(model, services, passwords, nodes=())


def test_compose_nats_config_parses_with_the_users(tmp_path: Path) -> None:
    """deploy/compose/nats.conf beside the users block, as the containers mount them, single and
    with each cluster node's flags."""
    directory = tmp_path / "loom"
    directory.mkdir()
    shutil.copy(COMPOSE_DIR / "nats.conf", directory / "nats.conf")
    shutil.copy(checks.COMPOSE_NATS_AUTH_CONF, directory / "nats-auth.conf")
    conf = _without_store_dir(directory / "nats.conf")
    passwords = checks.sample_nats_passwords()
    checks.nats_config_valid(conf, passwords)
    model = checks.compose_config(checks.COMPOSE_FILE, overrides=[CLUSTER_FILE], profiles=())
    for node in ("nats", "nats-2", "nats-3"):
        checks.nats_config_valid(conf, passwords, model["services"][node]["command"][2:])


def test_compose_without_passwords_stops_and_says_how_to_make_them(tmp_path: Path) -> None:
    shutil.copytree(checks.REPO / "deploy", tmp_path / "deploy")
    (tmp_path / "deploy/compose/.env").unlink(missing_ok=True)  # a developer's own passwords
    with pytest.raises(
        checks.CheckFailed, match=r"LOOM_NATS_PASSWORD_\w+ is missing a value.*scripts/compose_env.py"
    ):
        checks.compose_config(tmp_path / "deploy/compose/compose.yaml", nats_passwords={})
    partial = dict(checks.sample_nats_passwords())
    del partial["LOOM_NATS_PASSWORD_QUERY"]
    with pytest.raises(checks.CheckFailed, match="LOOM_NATS_PASSWORD_QUERY is missing"):
        checks.compose_config(tmp_path / "deploy/compose/compose.yaml", nats_passwords=partial)


def test_compose_nats_check_bites(services: list[dict]) -> None:
    passwords = checks.sample_nats_passwords()
    model = checks.compose_config(checks.COMPOSE_FILE, profiles=(), nats_passwords=passwords)
    model["services"]["query"]["environment"]["LOOM_NATS_USER"] = "admin"
    model["services"]["replay"]["environment"]["LOOM_NATS_PASSWORD"] = passwords["LOOM_NATS_PASSWORD_QUERY"]
    model["services"]["agent-worker-1"]["environment"]["LOOM_NATS_USER"] = "worker"  # the shared user
    del model["services"]["nats"]["environment"]["LOOM_NATS_PASSWORD_CLIENT"]
    model["services"]["nats"]["volumes"] = model["services"]["nats"]["volumes"][:2]
    with pytest.raises(
        checks.CheckFailed,
        match=r"(?s)nats: deploy/compose/nats-auth.conf is not mounted.*"
        r"nats: LOOM_NATS_PASSWORD_CLIENT.*agent-worker-1: LOOM_NATS_USER 'worker' is not 'worker-1'.*"
        r"query: LOOM_NATS_USER 'admin'.*replay: LOOM_NATS_PASSWORD",
    ):
        checks.compose_nats_auth(model, services, passwords)


# ------------------------------------------------------------------ the Helm chart


def test_chart_runs_nats_with_the_users(rendered: dict, services: list[dict]) -> None:
    for which in ("default", "dev"):
        checks.chart_nats_auth(rendered[which], services)
    checks.chart_nats_auth(rendered["prod"], services, in_chart=False)


def test_chart_nats_cluster_runs_with_the_users(services: list[dict], tmp_path: Path) -> None:
    docs = checks.render_chart(checks.CHART_DIR, {"nats": {"cluster": {"enabled": True}}})
    checks.chart_nats_auth(docs, services)
    args = checks.pod_spec(checks.workloads(docs)["nats"])["containers"][0]["args"]
    assert "--routes" in args and "--cluster_name" in args
    conf = _without_store_dir(_write_chart_config(docs, tmp_path / "loom"))
    node_args = [a.replace("$(POD_NAME)", "nats-0") for a in args[2:]]
    checks.nats_config_valid(conf, _nats_env(docs), node_args)


def test_chart_nats_config_parses_with_the_secrets_passwords(rendered: dict, tmp_path: Path) -> None:
    for which in ("default", "dev"):
        docs = rendered[which]
        conf = _without_store_dir(_write_chart_config(docs, tmp_path / which))
        env = _nats_env(docs)
        assert sorted(env) == sorted(checks.nats_password_variable(r) for r in ROLES)
        checks.nats_config_valid(conf, env)
        del env["LOOM_NATS_PASSWORD_WORKER"]
        with pytest.raises(checks.CheckFailed, match="LOOM_NATS_PASSWORD_WORKER"):
            checks.nats_config_valid(conf, env)


def test_chart_generates_passwords_a_letter_first_and_restarts_nats_on_new_ones(rendered: dict) -> None:
    docs = rendered["default"]
    env = _nats_env(docs)
    assert len(set(env.values())) == len(ROLES)
    for var, password in env.items():
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{31}", password), (var, password)
    # one set of passwords per render: the server's checksum is of the Secret's
    annotations = checks.workloads(docs)["nats"]["spec"]["template"]["metadata"]["annotations"]
    digest = hashlib.sha256(json.dumps(env, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert annotations["checksum/passwords"] == digest
    # each render without cluster access makes new ones (an install's are kept by `lookup`)
    again = _nats_env(checks.render_chart(checks.CHART_DIR, {}))
    assert set(again.values()).isdisjoint(env.values())


def test_chart_takes_passwords_from_values(services: list[dict]) -> None:
    given = {"worker": "Worker-pass-123", "admin": "admin_pass_4567"}
    docs = checks.render_chart(checks.CHART_DIR, {"natsAuth": {"passwords": given}})
    env = _nats_env(docs)
    assert env["LOOM_NATS_PASSWORD_WORKER"] == "Worker-pass-123"
    assert env["LOOM_NATS_PASSWORD_ADMIN"] == "admin_pass_4567"
    for d in docs:  # the passwords are in the Secret only: never in a ConfigMap or a pod spec
        if d["kind"] != "Secret":
            assert "Worker-pass-123" not in yaml.safe_dump(d), f"{d['kind']} {d['metadata']['name']}"
    # values-dev.yaml fixes them: Tilt's renders keep one set
    dev = checks.values_file(checks.CHART_DIR / "values-dev.yaml")
    assert sorted(dev["natsAuth"]["passwords"]) == sorted(ROLES)


def test_chart_with_an_existing_secret_reads_every_password_from_it(services: list[dict]) -> None:
    for nats_enabled in (True, False):
        values = {"existingSecret": "team-loom", "nats": {"enabled": nats_enabled}}
        if not nats_enabled:
            values["externalUrls"] = {"nats": "nats://nats.example:4222"}
        docs = checks.render_chart(checks.CHART_DIR, values)
        checks.kube_validate(docs)
        assert not checks.objects(docs, "Secret"), "existingSecret: the chart makes no Secret"
        checks.chart_nats_auth(docs, services, secret="team-loom", in_chart=nats_enabled)


def test_chart_with_external_nats_still_gives_each_role_its_password(rendered: dict) -> None:
    docs = rendered["prod"]
    env = _nats_env(docs)
    for role in checks.NATS_USERS.values():
        assert env[checks.nats_password_variable(role)], role
    notes = checks.CHART_DIR / "templates" / "NOTES.txt"
    assert "must have these users" in notes.read_text()


def test_chart_nats_settings_bite(rendered: dict, services: list[dict]) -> None:
    for bad in ("7m67hVevnGdjcC-ky0GnuB7y", "-VnQ6SYmZcx35_cstgaogRk", "short", "has space inside"):
        with pytest.raises(checks.CheckFailed, match="passwords"):
            checks.chart_schema(checks.CHART_DIR, {"natsAuth": {"passwords": {"worker": bad}}})
    with pytest.raises(checks.CheckFailed, match="passwords"):
        checks.chart_schema(checks.CHART_DIR, {"natsAuth": {"passwords": {"workers": "Abcdefghijkl1"}}})
    docs = json.loads(json.dumps(rendered["default"]))
    dispatcher = checks.pod_spec(checks.objects(docs, "Deployment")["dispatcher"])["containers"][0]
    for e in dispatcher["env"]:
        if e["name"] == "LOOM_NATS_PASSWORD":
            e["valueFrom"]["secretKeyRef"]["key"] = "LOOM_NATS_PASSWORD_ADMIN"
    nats = checks.pod_spec(checks.workloads(docs)["nats"])["containers"][0]
    nats["env"] = [e for e in nats["env"] if e["name"] != "LOOM_NATS_PASSWORD_INGEST"]
    checks.objects(docs, "ConfigMap")["nats-config"]["data"]["nats.conf"] = "listen: 0.0.0.0:4222\n"
    with pytest.raises(
        checks.CheckFailed,
        match=r"(?s)dispatcher: LOOM_NATS_PASSWORD comes from.*ADMIN.*does not include nats-auth.conf.*"
        r"LOOM_NATS_PASSWORD_INGEST",
    ):
        checks.chart_nats_auth(docs, services)


def test_chart_worker_instances_each_connect_as_their_own_user(services: list[dict], tmp_path: Path) -> None:
    """worker.instances: a Deployment of one pod per instance, connecting as the instance's user,
    whose entry in the server's users block is the one compose's block has for it."""
    instances = [i for svc in services for i in svc.get("instances", [])]
    docs = checks.render_chart(checks.CHART_DIR, {"worker": {"instances": instances}})
    checks.kube_validate(docs)
    checks.chart_nats_auth(docs, services, instances=instances, users_block=checks.COMPOSE_NATS_AUTH_CONF)
    deployments = checks.objects(docs, "Deployment")
    selectors = []
    for n, instance in enumerate(instances):
        d = deployments[f"agent-worker-{n}"]
        assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
        env = {e["name"]: e for e in checks.pod_spec(d)["containers"][0]["env"]}
        assert env["LOOM_INSTANCE_ID"]["value"] == instance
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "agent-worker"  # the Service, PDB, policies
        selectors.append(d["spec"]["selector"]["matchLabels"])
    assert len({json.dumps(sel, sort_keys=True) for sel in selectors}) == len(instances)
    assert "agent-worker" not in checks.objects(docs, "HorizontalPodAutoscaler")
    conf = _without_store_dir(_write_chart_config(docs, tmp_path / "loom"))
    env = _nats_env(docs)
    assert sorted(env) == sorted(checks.sample_nats_passwords())
    checks.nats_config_valid(conf, env)
    # the default: one Deployment sharing the worker user, scaled by its HPA
    checks.chart_nats_auth(checks.render_chart(checks.CHART_DIR, {}), services)


def test_chart_worker_instances_are_checked(services: list[dict]) -> None:
    for bad in (["worker"], ["Worker-0"], ["w.0"], ["a", "a"]):
        with pytest.raises(checks.CheckFailed, match="instances"):
            checks.chart_schema(checks.CHART_DIR, {"worker": {"instances": bad}})
    docs = checks.render_chart(checks.CHART_DIR, {"worker": {"instances": ["worker-0"]}})
    with pytest.raises(checks.CheckFailed, match=r"agent-worker-0: LOOM_NATS_USER .* is not 'worker-7'"):
        checks.chart_nats_auth(
            docs, services, instances=["worker-7"], users_block=checks.COMPOSE_NATS_AUTH_CONF
        )


def test_nats_refuses_a_password_it_cannot_parse(tmp_path: Path) -> None:
    """Why the chart's passwords start with a letter: nats-server parses the value of a variable
    a configuration reads, and a password like these is not a string to it."""
    directory = tmp_path / "loom"
    directory.mkdir()
    shutil.copy(checks.NATS_AUTH_CONF, directory / "nats-auth.conf")
    (directory / "nats.conf").write_text("include nats-auth.conf\n")
    for bad in ("7m67hVevnGdjcC-ky0GnuB7y", "-VnQ6SYmZcx35_cstgaogRk"):
        env = {**checks.sample_nats_passwords(), "LOOM_NATS_PASSWORD_WORKER": bad}
        with pytest.raises(checks.CheckFailed, match="LOOM_NATS_PASSWORD_WORKER"):
            checks.nats_config_valid(directory / "nats.conf", env)
