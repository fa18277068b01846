"""The dispatcher's HTTP surface without its backends: error bodies and the OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient
from loom_dispatcher.app import create_app


def test_errors_have_one_shape_and_every_endpoint_documents_its_answers() -> None:
    client = TestClient(create_app())  # no lifespan: nothing here reaches NATS or Redis
    unknown = client.get("/api/nothing-here")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    typo = client.post("/api/tasks", json={"targetAgnet": "echo"})
    assert typo.status_code == 422 and typo.json()["error"]["code"] == "invalid_request"
    assert {f["field"] for f in typo.json()["error"]["fields"]} == {"body.targetAgent", "body.targetAgnet"}
    spec = client.get("/openapi.json").json()
    assert "ErrorBody" in spec["components"]["schemas"] and "Task" in spec["components"]["schemas"]
    paths = ("/api/tasks", "/api/tasks/{task_id}", "/api/tasks/{task_id}/cancel")
    for path in (*paths, "/api/tasks/{task_id}/approve", "/api/tasks/{task_id}/reject"):
        for operation in spec["paths"][path].values():
            responses = operation["responses"]
            assert "404" in responses or path == "/api/tasks", path
            ok = responses.get("200") or responses["202"]
            assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Task"}, path


def test_a_decision_body_is_checked_before_anything_is_read() -> None:
    client = TestClient(create_app())  # no lifespan: these answers never reach Redis
    for verb in ("approve", "reject"):
        typo = client.post(f"/api/tasks/t1/{verb}", json={"reasn": "typo"})
        assert typo.status_code == 422, verb
        assert typo.json()["error"]["fields"][0]["field"] == "body.reasn"
    edited = client.post("/api/tasks/t1/reject", json={"arguments": {"path": "/tmp"}})
    assert edited.status_code == 422
    assert edited.json()["error"]["code"] == "invalid_request"
    assert edited.json()["error"]["fields"] == [
        {"field": "body.arguments", "reason": "a rejection takes no arguments (only approve does)"}
    ]
    spec = client.get("/openapi.json").json()
    approve = spec["paths"]["/api/tasks/{task_id}/approve"]["post"]
    assert approve["requestBody"].get("required") is not True  # an empty body is fine
    assert "409" in approve["responses"]


def test_a_store_or_broker_that_is_down_answers_503_with_retry_after() -> None:
    from loom_dispatcher.config import Settings

    closed = Settings(redis_url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    client = TestClient(create_app(closed), raise_server_exceptions=False)
    down = client.get("/api/tasks/t1")
    assert down.status_code == 503, down.text
    assert down.headers["retry-after"] == "1"
    assert down.json()["error"]["code"] == "unavailable"
    assert "Redis" in down.json()["error"]["message"]


async def test_a_stream_without_a_leader_is_503_not_500() -> None:
    from loom_dispatcher.errors import HTTP_ERROR_HANDLERS
    from nats.errors import Error as NatsError
    from nats.js.errors import NoStreamResponseError

    assert issubclass(NoStreamResponseError, NatsError)  # Starlette picks the handler by the MRO
    answer = await HTTP_ERROR_HANDLERS[NatsError](None, NoStreamResponseError())
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_a_bounded_wait_that_runs_out_is_503_not_500() -> None:
    import asyncio

    from nats.errors import TimeoutError as NatsTimeoutError

    app = create_app()

    async def gave_up() -> None:  # what a wait_for / asyncio.timeout on the broker raises
        async with asyncio.timeout(0):
            await asyncio.sleep(1)

    async def nats_gave_up() -> None:
        raise NatsTimeoutError

    app.add_api_route("/test/gave-up", gave_up)
    app.add_api_route("/test/nats-gave-up", nats_gave_up)
    client = TestClient(app, raise_server_exceptions=False)
    for path in ("/test/gave-up", "/test/nats-gave-up"):
        answer = client.get(path)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["code"] == "unavailable"
    assert "did not answer in time" in client.get("/test/gave-up").json()["error"]["message"]
    assert "TimeoutError" in client.get("/test/nats-gave-up").json()["error"]["message"]
