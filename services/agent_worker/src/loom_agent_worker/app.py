"""The agent-worker app: hosts agents, takes tasks assigned to its instance, emits events."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from faststream.message import StreamMessage
from faststream.nats import NatsBroker, NatsRouter
from loom_protocol import Task, TaskCancelRequested, subjects, validation_reason
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from .children import NatsChildTasks
from .config import Settings
from .emitter import EventEmitter
from .execution import Executor
from .heartbeat import Heartbeater
from .reporting import StatusReporter
from .runtime import LoggingInterceptor, build_demo_agents, make_provider
from .streams import ensure_streams
from .telemetry import broker_middlewares, instrument_app, setup_tracing

log = logging.getLogger(__name__)
VERSION = "0.1.0"


async def as_message(msg: StreamMessage[Any]) -> StreamMessage[Any]:
    """The decoder of the subscribers here: hand the handler the message itself.

    The handlers take it as a plain parameter, not as FastStream's ``NatsMessage`` context
    annotation: resolving a context parameter costs every message an anyio task group and a
    worker-thread hop (``Context.use`` is synchronous, so fast_depends runs it in a thread).
    """
    return msg


def build_router(executor: Executor, reporter: StatusReporter) -> NatsRouter:
    router = NatsRouter()

    # no_reply: an assignment is a JetStream publish whose reply subject is the dispatcher's
    # ack inbox; FastStream would answer the handler's None there, and an empty answer that
    # beats the stream's ack fails the dispatcher's publish (JSONDecodeError)
    @router.subscriber(subjects.task_assigned(executor.instance_id), no_reply=True, decoder=as_message)
    async def on_assigned(msg: Any) -> None:
        try:
            task = Task.from_json(msg.body)
        except ValidationError as exc:
            await reporter.rejected(msg.raw_message.subject, msg.body, validation_reason(exc))
            return
        await executor.accept(task)

    @router.subscriber(subjects.TASK_CANCEL_ALL, no_reply=True, decoder=as_message)
    async def on_cancel(msg: Any) -> None:
        try:
            request = TaskCancelRequested.from_json(msg.body)
        except ValidationError as exc:
            await reporter.rejected(msg.raw_message.subject, msg.body, validation_reason(exc))
            return
        if executor.cancel(request.task_id):
            log.info("cancelling task", extra={"task_id": request.task_id})

    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tracing = setup_tracing("loom-agent-worker")
    broker = NatsBroker(settings.nats_url, log_level=logging.DEBUG, middlewares=broker_middlewares(tracing))
    provider = make_provider(
        settings.llm_provider,
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        timeout_s=settings.llm_timeout_s,
    )
    demo = build_demo_agents(provider)
    unknown = set(settings.agent_ids) - set(demo)
    if unknown:
        raise ValueError(f"LOOM_WORKER_AGENTS names unknown agents: {sorted(unknown)}; known: {sorted(demo)}")
    agents = {agent_id: demo[agent_id] for agent_id in settings.agent_ids}
    reporter = StatusReporter(broker, settings.instance_id)
    emitter = EventEmitter(broker, f"/workers/{settings.instance_id}", settings.event_buffer)

    def children(task: Task, agent_id: str) -> NatsChildTasks:
        return NatsChildTasks(broker, task, agent_id)

    executor = Executor(
        settings.instance_id,
        agents,
        reporter,
        emitter,
        children,
        [LoggingInterceptor(level=logging.DEBUG)],
        settings.worker_concurrency,
    )
    heart = Heartbeater(broker, executor, settings.heartbeat_interval_s, VERSION)
    broker.include_router(build_router(executor, reporter))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.connect()
        await ensure_streams(broker.connection.jetstream())
        emitter.start()
        await broker.start()
        heart.start()
        log.info("worker up", extra={"instance_id": settings.instance_id, "agents": list(agents)})
        try:
            yield
        finally:
            await executor.drain(settings.drain_timeout_s)
            await heart.beat()  # a last heartbeat that says draining
            await heart.stop()
            await reporter.flush()
            await emitter.stop()
            await broker.stop()
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(title="Loom agent-worker", version=VERSION, lifespan=lifespan)

    instrument_app(app, tracing)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "instanceId": settings.instance_id}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ready = broker.connection.is_connected and not executor.draining
        return JSONResponse(
            {"nats": broker.connection.is_connected, "draining": executor.draining},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
