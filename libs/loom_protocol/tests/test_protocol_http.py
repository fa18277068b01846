"""The error body and ops answers every Loom HTTP API shares."""

from __future__ import annotations

from typing import Any

from loom_protocol.http import ErrorBody, Liveness, Readiness, error_code


class _HttpError(Exception):
    def __init__(self, status_code: int, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        self.status_code, self.detail, self.headers = status_code, detail, headers


class _Invalid(Exception):
    def errors(self) -> list[dict[str, Any]]:
        return [{"loc": ("body", "targetAgent"), "msg": "Field required"}, {"loc": (), "msg": "bad"}]


def test_error_codes_are_the_status_names_in_snake_case() -> None:
    assert [error_code(s) for s in (404, 409, 413, 422, 503, 599)] == [
        "not_found",
        "conflict",
        "content_too_large",
        "unprocessable_entity",
        "service_unavailable",
        "http_599",
    ]


def test_exceptions_map_to_one_body_shape() -> None:
    status, body = ErrorBody.answer(_HttpError(404, "no task with id 'x'"))
    assert (status, body.to_wire()) == (
        404,
        {"error": {"code": "not_found", "message": "no task with id 'x'"}},
    )
    status, body = ErrorBody.answer(_Invalid())
    assert status == 422
    assert body.to_wire() == {
        "error": {
            "code": "invalid_request",
            "message": "body.targetAgent: Field required; request: bad",
            "fields": [
                {"field": "body.targetAgent", "reason": "Field required"},
                {"field": "request", "reason": "bad"},
            ],
        }
    }
    status, body = ErrorBody.answer(RuntimeError("secret detail"))
    assert status == 500 and body.error.code == "internal_error" and "secret" not in body.error.message
    status, body = ErrorBody.answer(_HttpError(400, [{"loc": ["x"]}]))
    assert body.to_wire()["error"] == {
        "code": "bad_request",
        "message": "bad request",
        "details": [{"loc": ["x"]}],
    }
    assert ErrorBody.of(409, "busy", code="session_busy", index=3).to_wire() == {
        "error": {"code": "session_busy", "message": "busy", "index": 3}
    }
    assert ErrorBody.model_validate(
        {"error": {"code": "x", "message": "y", "extra": 1}}
    ).error.model_extra == {"extra": 1}


def test_readiness_is_ready_only_when_every_check_passed() -> None:
    assert Readiness.of(nats=True, redis=True).to_wire() == {
        "ready": True,
        "checks": {"nats": True, "redis": True},
    }
    down = Readiness.of("redis: refused", nats=True, redis=False)
    assert (down.ready, down.status, down.reason) == (False, 503, "redis: refused")
    assert Liveness.ok().to_wire() == {"status": "ok"}
