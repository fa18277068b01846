"""``/docs`` of every service is Swagger UI served from the service itself: every script,
stylesheet and image the page loads is a path on the same server and answers 200 (no CDN: the
machines Loom runs on may reach no other host)."""

from __future__ import annotations

import importlib
import re

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.component

SERVICES = [
    "loom_agent_worker",
    "loom_dispatcher",
    "loom_ingest",
    "loom_query",
    "loom_registry",
    "loom_replay",
]


@pytest.mark.parametrize("package", SERVICES)
def test_docs_load_nothing_from_another_host(package: str) -> None:
    app = importlib.import_module(f"{package}.app").create_app()
    client = TestClient(app)  # no lifespan: the page and its assets need no broker or database
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets, page.text
    for asset in assets:
        assert asset.startswith("/"), f"{package} /docs loads {asset}"
        assert client.get(asset).status_code == 200, asset
    assert "url: '/openapi.json'" in page.text or '"/openapi.json"' in page.text
    assert client.get("/openapi.json").status_code == 200
