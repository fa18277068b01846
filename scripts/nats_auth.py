"""Loom's NATS users: the server's ``authorization`` block and the passwords it reads.

python scripts/nats_auth.py config FILE [--worker ID ...]
    writes the block (loom_protocol.nats_auth.authorization): one user per role, named after
    it, and one worker user bound to each instance ID; each password is read by nats-server
    from its environment, LOOM_NATS_PASSWORD_<USER>
python scripts/nats_auth.py instance-user FILE
    writes the users-list entry of a worker user bound to one instance, for the instance
    __INSTANCE__ with the password $__PASSWORD__: the Helm chart's per-instance workers
    (worker.instances) replace both
python scripts/nats_auth.py passwords FILE [--worker ID ...]
    makes FILE (mode 600, ``NAME=value`` lines) hold a random password for each of those
    users (32 letters and digits); passwords already in FILE are kept
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import string
from pathlib import Path

from dotenv import dotenv_values
from loom_protocol.nats_auth import Role, authorization, password_variable, server_users

INSTANCE, PASSWORD = "__INSTANCE__", "$__PASSWORD__"


def write_config(path: Path, workers: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Loom's NATS users and their permissions (scripts/nats_auth.py config; do not edit):\n"
        "# each password comes from the server's environment, LOOM_NATS_PASSWORD_<USER>.\n"
        + authorization(workers)
    )


def write_instance_user(path: Path, workers: list[str]) -> None:
    if workers:
        raise SystemExit("instance-user takes no --worker: it writes the entry of __INSTANCE__")
    entry = server_users([(INSTANCE, Role.WORKER, PASSWORD)], {INSTANCE: INSTANCE})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# A worker user bound to one instance (scripts/nats_auth.py instance-user; do not edit): the\n"
        f"# chart puts one in its users block per worker.instances entry, {INSTANCE} and {PASSWORD}\n"
        "# replaced by the instance id and its password variable. The entry is the last line.\n"
        + entry.removeprefix("[\n  ").removesuffix("\n]")
        + "\n"
    )


_LETTERS = string.ascii_letters
_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9]{15,}$")


def new_password() -> str:
    """32 letters and digits, a letter first: nats-server parses the value of the variable it reads
    (``7m…`` would be a size, ``-…`` no string), and the value travels in the services' URLs."""
    return secrets.choice(_LETTERS) + "".join(secrets.choice(_LETTERS + string.digits) for _ in range(31))


_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_]\w*)\s*=")


def assigned(line: str) -> str | None:
    """The variable a ``NAME=value`` line of an env file sets, or None (a comment, a blank)."""
    match = _ASSIGNMENT.match(line)
    return match.group(1) if match else None


def write_passwords(path: Path, workers: list[str]) -> None:
    users = [role.value for role in Role] + workers
    old = path.read_text() if path.exists() else ""
    kept = {k: v for k, v in dotenv_values(path).items() if v and _PASSWORD.match(v)} if old else {}
    names = list(map(password_variable, users))
    lines = [f"{var}={kept.get(var) or new_password()}" for var in names]
    # other settings in the file (compose's Redis and database passwords, ...) stay as written;
    # NATS passwords of users no longer named go
    lines += [
        line
        for line in old.splitlines()
        if (key := assigned(line)) is not None and not key.startswith(password_variable(""))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    path.chmod(0o600)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["config", "instance-user", "passwords"])
    parser.add_argument("file", type=Path)
    parser.add_argument("--worker", action="append", default=[], help="an instance id with a user of its own")
    args = parser.parse_args()
    write = {"config": write_config, "instance-user": write_instance_user, "passwords": write_passwords}
    write[args.what](args.file, args.worker)


if __name__ == "__main__":
    main()
