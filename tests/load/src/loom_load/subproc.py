"""Worker processes the harness starts for a peer: each in a process group of its own, so that
stopping it (SIGTERM, then SIGKILL after a grace period) reaches every process it forked and
nothing else on the machine."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path


def start(command: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` in a new session (its own process group), output appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group start() created for this process (pgid == its pid)
    except ProcessLookupError:
        pass


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int | None:
    """SIGTERM to the process's group, SIGKILL to it after ``timeout_s``; the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=5)
    _signal_group(proc, signal.SIGKILL)  # children the leader left behind, if any
    return proc.returncode
