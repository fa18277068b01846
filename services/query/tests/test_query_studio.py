"""Loom Studio in the query service, without a broker or a database: the static files at ``/``
(no API route shadowed), the proxy to the dispatcher and the replay service (method, query,
body, status, content type and the API key through, no other credential; 502/504 with the error
body; no other host reachable), the
vendored libraries' checksums and the modules' imports resolving to files that exist."""

from __future__ import annotations

import hashlib
import json
import re
import socket
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from loom_query.app import create_app
from loom_query.config import Settings
from loom_query.studio import STATIC_DIR
from loom_query.studio.proxy import Proxy


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Settings()))  # no lifespan: nothing here needs NATS or the database


def test_the_studio_is_served_at_the_root_and_the_api_routes_keep_their_answers(client: TestClient) -> None:
    index = client.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert '<script type="module" src="app.js">' in index.text
    assert index.headers["cache-control"] == "no-cache"
    script = client.get("/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/views/tasks.js").status_code == 200
    # the API's own answers: an unknown path or method is still the error body's 404
    for method, path in (("GET", "/api/nope"), ("POST", "/app.js"), ("POST", "/nope"), ("GET", "/nope.js")):
        resp = client.request(method, path)
        assert resp.status_code == 404, (method, path)
        assert resp.json()["error"]["code"] == "not_found"
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/tasks"]
    assert client.get("/healthz").status_code == 200


def test_every_module_import_names_a_file_that_exists() -> None:
    pattern = re.compile(r"""(?:from\s+|import\s*\(\s*|import\s+)["'](\.{1,2}/[^"']+)["']""")
    checked = 0
    for module in STATIC_DIR.rglob("*.js"):
        if "vendor" in module.parts:
            continue
        for target in pattern.findall(module.read_text()):
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports {target}"
            checked += 1
    assert checked >= 10
    html = (STATIC_DIR / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"#:]+)"', html):
        assert ref == "/docs" or (STATIC_DIR / ref).is_file(), ref


def test_the_static_files_load_nothing_from_another_host() -> None:
    external = re.compile(r"""(?:https?:)?//(?!127\.0\.0\.1|localhost)[a-z0-9.-]+\.[a-z]{2,}/""", re.I)
    for path in STATIC_DIR.rglob("*"):
        if path.suffix in {".js", ".css", ".html"} and "vendor" not in path.parts:
            found = external.findall(path.read_text())
            assert not found, f"{path.name}: {found}"


def test_vendored_files_match_their_recorded_checksums() -> None:
    vendor = STATIC_DIR / "vendor"
    recorded = json.loads((vendor / "VENDOR.json").read_text())
    present = {p.name for p in vendor.iterdir() if p.is_file() and p.name != "VENDOR.json"}
    assert present == set(recorded), "every vendored file is recorded in VENDOR.json, and only those"
    for name, entry in recorded.items():
        assert set(entry) >= {"package", "version", "sha256"}, name
        digest = hashlib.sha256((vendor / name).read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{name} changed since it was vendored from {entry['package']}"


def recording_proxy(settings: Settings, seen: list[httpx.Request], answer: httpx.Response) -> Proxy:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    return Proxy(settings, transport=httpx.MockTransport(handle))


def test_the_proxy_forwards_method_query_body_status_and_content_type() -> None:
    settings = Settings(dispatcher_url="http://127.0.0.1:18001", replay_url="http://127.0.0.1:18005/base")
    app = create_app(settings)
    seen: list[httpx.Request] = []
    body = json.dumps({"error": {"code": "task_id_conflict", "message": "no"}})
    app.state.studio_proxy = recording_proxy(
        settings, seen, httpx.Response(409, content=body, headers={"content-type": "application/json"})
    )
    client = TestClient(app)
    resp = client.post(
        "/studio-api/dispatcher/api/tasks?wait=2&waitForAgent=true",
        json={"targetAgent": "calculator"},
        headers={"cookie": "secret=1"},
    )
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "task_id_conflict"
    assert resp.headers["content-type"] == "application/json"
    sent = seen[-1]
    assert sent.method == "POST"
    assert str(sent.url) == "http://127.0.0.1:18001/api/tasks?wait=2&waitForAgent=true"
    assert json.loads(sent.content) == {"targetAgent": "calculator"}
    assert sent.headers["content-type"] == "application/json" and "cookie" not in sent.headers

    app.state.studio_proxy = recording_proxy(settings, seen, httpx.Response(200, json={"ok": 1}))
    assert client.get("/studio-api/replay/api/replay/sessions/x").json() == {"ok": 1}
    assert str(seen[-1].url) == "http://127.0.0.1:18005/base/api/replay/sessions/x"
    assert seen[-1].method == "GET" and seen[-1].content == b""


def test_the_proxy_passes_the_api_key_on_and_no_other_credential() -> None:
    settings = Settings(dispatcher_url="http://127.0.0.1:18001")
    app = create_app(settings)
    seen: list[httpx.Request] = []
    body = {"error": {"code": "forbidden", "message": "lacks the 'submit' scope", "scope": "submit"}}
    app.state.studio_proxy = recording_proxy(settings, seen, httpx.Response(403, json=body))
    client = TestClient(app)
    resp = client.post(
        "/studio-api/dispatcher/api/tasks/t1/cancel",
        headers={"authorization": "Bearer loom_abc", "cookie": "session=1", "x-api-key": "other"},
    )
    assert resp.status_code == 403 and resp.json() == body  # the upstream's refusal, as it is
    assert seen[-1].headers["authorization"] == "Bearer loom_abc"
    assert "cookie" not in seen[-1].headers and "x-api-key" not in seen[-1].headers
    client.get("/studio-api/dispatcher/api/tasks/t1")
    assert "authorization" not in seen[-1].headers  # none given, none sent


def test_the_proxy_reaches_only_its_two_upstreams() -> None:
    settings = Settings(dispatcher_url="http://127.0.0.1:18001")
    app = create_app(settings)
    seen: list[httpx.Request] = []
    app.state.studio_proxy = recording_proxy(settings, seen, httpx.Response(204))
    client = TestClient(app)
    resp = client.get("/studio-api/elsewhere/api/x")
    assert resp.status_code == 404 and "no upstream 'elsewhere'" in resp.json()["error"]["message"]
    for path in ("//evil.example/x", "@evil.example/x", "http://evil.example/x", "../../x"):
        client.get(f"/studio-api/dispatcher/{path}")
    assert seen and all(r.url.host == "127.0.0.1" and r.url.port == 18001 for r in seen)
    assert client.put("/studio-api/dispatcher/api/tasks").status_code in (404, 405)


def test_an_unreachable_upstream_is_502_and_a_slow_one_504() -> None:
    app = create_app(Settings(dispatcher_url=f"http://127.0.0.1:{unused_port()}", proxy_timeout_s=2))
    client = TestClient(app)
    resp = client.post("/studio-api/dispatcher/api/tasks", json={})
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_unavailable"

    def slow(_: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer")

    settings = Settings(replay_url="http://127.0.0.1:18005", proxy_timeout_s=0.5)
    app.state.studio_proxy = Proxy(settings, transport=httpx.MockTransport(slow))
    resp = client.get("/studio-api/replay/api/x")
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"


def test_the_static_directory_is_inside_the_package() -> None:
    package = Path(__import__("loom_query").__file__).parent
    assert STATIC_DIR.is_relative_to(package) and (STATIC_DIR / "index.html").is_file()
