"""Every service reads its settings the same way: ``LOOM_*`` variables, then ``.env``, empty
values ignored, unknown ones too; the ports are the contract's (DESIGN.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from loom_agent_worker.config import Settings as WorkerSettings
from loom_dispatcher.config import Settings as DispatcherSettings
from loom_ingest.config import Settings as IngestSettings
from loom_protocol import NATS_URL, ServiceSettings
from loom_query.config import Settings as QuerySettings
from loom_registry.config import Settings as RegistrySettings
from loom_replay.config import Settings as ReplaySettings

PORTS = {
    DispatcherSettings: 8001,
    RegistrySettings: 8002,
    IngestSettings: 8003,
    QuerySettings: 8004,
    ReplaySettings: 8005,
    WorkerSettings: 8100,
}


@pytest.mark.parametrize("settings", list(PORTS), ids=lambda s: s.__module__.split(".")[0])
def test_settings_come_from_loom_variables_and_dot_env(
    settings: type[ServiceSettings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("LOOM_HTTP_HOST", "LOOM_HTTP_PORT", "LOOM_LOG_LEVEL", "LOOM_NATS_URL"):
        monkeypatch.delenv(name, raising=False)
    defaults = settings()
    assert (defaults.http_host, defaults.log_level) == ("127.0.0.1", "INFO")
    assert defaults.http_port == PORTS[settings]  # type: ignore[attr-defined]
    assert getattr(defaults, "nats_url", NATS_URL) == NATS_URL

    (tmp_path / ".env").write_text("LOOM_HTTP_PORT=9999\nLOOM_LOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("LOOM_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("LOOM_LOG_LEVEL", "")  # empty: ignored, .env's value holds
    monkeypatch.setenv("LOOM_NOT_A_SETTING", "x")  # unknown: ignored
    read = settings()
    assert (read.http_host, read.log_level) == ("0.0.0.0", "DEBUG")
    assert read.http_port == 9999  # type: ignore[attr-defined]
