"""Fixtures of the real-model tier: the llama-cpp-python server of the real-model venv
(``scripts/realmodel_env.sh`` builds ``.realmodel-venv``; ``LOOM_REALMODEL_PYTHON`` names another
python), started once for the session.

The tier is opt-in: its tests carry the ``realmodel`` marker and run when ``-m`` selects it
(``make test-real-model``). Selected without the venv, they fail and say how to build it; run
without such a ``-m``, they skip.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.realmodel.model_server import REALMODEL_PYTHON, ModelServer, serving

_SELECTED = re.compile(r"(?<!not )\brealmodel\b")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realmodel: against a real small model on llama-cpp-python (opt-in, make test-real-model)"
    )


@pytest.fixture(scope="session")
def realmodel_python(request: pytest.FixtureRequest) -> Path:
    """The python of the real-model venv; a skip when the run did not opt in with ``-m realmodel``."""
    if not _SELECTED.search(request.config.getoption("markexpr") or ""):
        pytest.skip("real-model test: opt in with -m realmodel (make test-real-model)")
    if not REALMODEL_PYTHON.exists():
        pytest.fail(
            f"no real-model venv at {REALMODEL_PYTHON}: run scripts/realmodel_env.sh "
            "(or set LOOM_REALMODEL_PYTHON to its python)"
        )
    return REALMODEL_PYTHON


@pytest.fixture(scope="session")
async def model_server(
    realmodel_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ModelServer]:
    async with serving(realmodel_python, tmp_path_factory.mktemp("llama")) as server:
        yield server
