"""Fixtures for the offline deploy checks (run them with `bash scripts/deploy_check.sh`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# These tests need the tools of their own uv project (tests/deploy/pyproject.toml). When the
# root workspace's pytest collects tests/ it has none of them: skip collection there instead of
# failing on imports; scripts/deploy_check.sh runs them with the right environment. Those that
# need only the standard library (_ANYWHERE) run in both.
_TOOLS = ("helm_python", "kubernetes_validate", "starlark", "yaml", "compose")
_ANYWHERE = ("test_nats_users_block.py",)
if any(importlib.util.find_spec(m) is None for m in _TOOLS):
    collect_ignore = [p.name for p in Path(__file__).parent.glob("test_*.py") if p.name not in _ANYWHERE]
else:
    sys.path.insert(0, str(Path(__file__).parent))

    import checks
    import pytest

    @pytest.fixture(scope="session")
    def services() -> list[dict]:
        return checks.load_services()

    @pytest.fixture(scope="session")
    def infra() -> list[dict]:
        return checks.load_infra()

    @pytest.fixture(scope="session")
    def prod_values() -> dict:
        return checks.values_file(checks.CHART_DIR / "values-prod.yaml")

    @pytest.fixture(scope="session")
    def dev_values() -> dict:
        return checks.values_file(checks.CHART_DIR / "values-dev.yaml")

    @pytest.fixture(scope="session")
    def rendered(prod_values: dict, dev_values: dict) -> dict[str, list[dict]]:
        """The chart rendered with its default values, values-dev.yaml and values-prod.yaml."""
        return {
            "default": checks.render_chart(checks.CHART_DIR, {}),
            "dev": checks.render_chart(checks.CHART_DIR, dev_values),
            "prod": checks.render_chart(checks.CHART_DIR, prod_values),
        }

    @pytest.fixture(scope="session")
    def compose_model() -> dict:
        return checks.compose_config(checks.COMPOSE_FILE)

    @pytest.fixture(scope="session")
    def tilt() -> checks.TiltRecord:
        return checks.eval_tiltfile(checks.TILTFILE, checks.REPO)
