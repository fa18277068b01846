"""Optional: sample one service with py-spy during the main phase and keep its top frames.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;frame count`` per line);
:func:`top_frames` turns them into the frames with the most samples, by self time (the frame
on top of the stack) and inclusive time (anywhere in the stack).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from . import procstat

SERVICE_PORTS = {"dispatcher": 8001, "registry": 8002, "ingest": 8003, "query": 8004, "replay": 8005}
SERVICE_PORTS["agent-worker"] = 8100


pid_listening_on = procstat.pid_listening_on


def find_pid(service: str, port: int | None = None) -> int | None:
    """The pid of the stack's ``service`` (a name of :data:`SERVICE_PORTS` or a port number)."""
    if service.isdigit():
        return pid_listening_on(int(service))
    port = port or SERVICE_PORTS.get(service)
    if port is not None:
        pid = pid_listening_on(port)
        if pid is not None:
            return pid
    for entry in sorted(Path("/proc").iterdir(), key=lambda p: p.name):  # fallback: by command line
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if procstat.classify(cmdline.strip()) == service:
            return int(entry.name)
    return None


def py_spy_path() -> str | None:
    local = Path(sys.prefix) / "bin" / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Sampler:
    def __init__(self, service: str, out_dir: Path, rate: int = 200, port: int | None = None) -> None:
        self.service = service
        self.port = port
        self.raw_path = out_dir / f"py-spy-{service}.txt"
        self.rate = rate
        self.pid: int | None = None
        self.error: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = py_spy_path()
        self.pid = find_pid(self.service, self.port)
        if exe is None:
            self.error = "py-spy not installed (uv sync --project tests/load installs it with the dev group)"
            return
        if self.pid is None:
            self.error = f"no running process of {self.service}"
            return
        command = [exe, "record", "--pid", str(self.pid), "--format", "raw", "--rate", str(self.rate)]
        command += ["--output", str(self.raw_path), "--nonblocking", "--nolineno"]
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> dict[str, Any]:
        out: dict[str, Any] = {"service": self.service, "pid": self.pid}
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                _, err = self._proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                _, err = self._proc.communicate()
            if self.raw_path.exists():
                out["raw"] = str(self.raw_path)
                out.update(top_frames(self.raw_path.read_text()))
            else:
                self.error = f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"
        if self.error:
            out["error"] = self.error
        return out


def top_frames(collapsed: str, n: int = 15) -> dict[str, Any]:
    """Top frames by self and inclusive samples from collapsed stacks."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return {"samples": 0}

    packages: Counter[str] = Counter()
    for frame, count in self_time.items():
        where = frame.rpartition("(")[2].rstrip(")")
        packages[where.split("/")[0] or where] += count

    def pct(counter: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(frame, round(100 * c / total, 1)) for frame, c in counter.most_common(k)]

    return {
        "samples": total,
        "top_self": pct(self_time, n),
        "self_by_package": pct(packages, n),
        "top_inclusive": pct(inclusive, 3 * n),
    }
