"""Every secret the compose stack reads, in the env file Compose reads by itself.

uv run python scripts/compose_env.py [FILE] [--worker ID ...]
    makes FILE (default deploy/compose/.env; mode 600, ``NAME=value`` lines) hold
    - the NATS users' passwords, LOOM_NATS_PASSWORD_<USER> (scripts/nats_auth.py passwords): one
      per role, and one per worker instance of deploy/services.toml (``instances``, each a compose
      service with a user of its own) and of --worker,
    - LOOM_REDIS_PASSWORD, which the bundled Redis requires (--requirepass),
    - LOOM_POSTGRES_PASSWORD, the bundled TimescaleDB's postgres user's,
    each 32 letters and digits (they travel in the services' URLs). Passwords already in FILE are
    kept, and so are its other variables (LOOM_BIND_ADDRESS, ...). TimescaleDB takes its password
    when it makes its volume: a new LOOM_POSTGRES_PASSWORD does not reach an existing one
    (docs/deploy.md, "docker compose").
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import tomllib
from pathlib import Path

from dotenv import dotenv_values
from nats_auth import assigned, new_password, write_passwords

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = ROOT / "deploy" / "compose" / ".env"
PASSWORDS = ("LOOM_REDIS_PASSWORD", "LOOM_POSTGRES_PASSWORD")
_URL_SAFE = re.compile(r"^[A-Za-z0-9]{16,}$")


def compose_instances(services_toml: Path = ROOT / "deploy" / "services.toml") -> list[str]:
    """The worker instances compose runs as services of their own (services.toml ``instances``)."""
    services = tomllib.loads(services_toml.read_text()).get("service", [])
    return [instance for svc in services for instance in svc.get("instances", [])]


def write_compose_env(path: Path, workers: list[str]) -> list[str]:
    """Write FILE as the module docstring says; return the variables whose unusable value (not
    16 or more letters and digits) was replaced. The file is replaced in one step."""
    old = path.read_text() if path.exists() else ""
    values = dotenv_values(path) if path.exists() else {}
    others = [
        line for line in old.splitlines() if (key := assigned(line)) is not None and key not in PASSWORDS
    ]
    replaced, lines = [], []
    for var in PASSWORDS:
        value = values.get(var)
        if not (value and _URL_SAFE.match(value)):
            if value:
                replaced.append(var)
            value = new_password()
        lines.append(f"{var}={value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines + others) + "\n")
        # the NATS passwords first (kept where valid, else made), every other line as it is
        write_passwords(tmp, list(dict.fromkeys([*compose_instances(), *workers])))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return replaced


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file", type=Path, nargs="?", default=ENV_FILE)
    parser.add_argument("--worker", action="append", default=[], help="an instance id with a user of its own")
    args = parser.parse_args()
    for var in write_compose_env(args.file, args.worker):
        sys.stderr.write(f"{args.file}: {var} was not 16 or more letters and digits: made a new one\n")


if __name__ == "__main__":
    main()
