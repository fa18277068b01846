"""Dispatcher errors: one base class, each says whether the message is worth redelivering;
and how the HTTP API answers errors."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loom_protocol.http import ErrorBody, unavailable
from nats.errors import Error as NatsError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException


class DispatcherError(Exception):
    """Base class of dispatcher errors."""

    retryable = False


class BadSubmission(DispatcherError):
    """A submitted message that can never become a task (dead-lettered with the reason)."""


class MessageTooLarge(DispatcherError):
    """A message that would exceed the broker's ``max_payload`` (headers included) was not sent:
    sending it would make the server close the connection."""


class RegistryUnavailable(DispatcherError):
    """No pick could be made (the registry's state in Redis was unreadable, or the registry did
    not answer in time); the sweeper or a redelivery tries again."""

    retryable = True


async def error_answer(_: Request, exc: Exception) -> Response:
    status, body = ErrorBody.answer(exc)
    return JSONResponse(body.to_wire(), status, headers=getattr(exc, "headers", None))


async def unavailable_answer(_: Request, exc: Exception) -> Response:
    """503 with ``Retry-After`` when NATS/JetStream (no connection, no stream leader, no ack)
    or Redis fails a request, or a bounded wait on them runs out: the state is unknown to the
    client, and retrying with the same ``taskId`` is safe."""
    if isinstance(exc, RedisError):
        what = f"the task store (Redis) is not available ({type(exc).__name__})"
    elif isinstance(exc, NatsError):
        what = f"the broker (NATS JetStream) is not available ({type(exc).__name__})"
    else:  # one of the dispatcher's own bounds
        what = "the broker (NATS JetStream) did not answer in time"
    status, body, headers = unavailable(f"{what}; retry (the same taskId is idempotent)")
    return JSONResponse(body.to_wire(), status, headers=headers)


# every error the HTTP API answers, in the one error body of every Loom API
HTTP_ERROR_HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]] = {
    **dict.fromkeys((HTTPException, RequestValidationError, Exception), error_answer),
    # every wait in a request is bounded; one that runs out (TimeoutError: asyncio.timeout,
    # wait_for) is a broker that did not answer, not a fault of the dispatcher's
    **dict.fromkeys((NatsError, RedisError, TimeoutError), unavailable_answer),
}
