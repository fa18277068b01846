"""The agent-worker app: hosts agents, takes tasks assigned to its instance, emits events."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from loom_protocol import Task
from loom_protocol.jetstream import ALL_STREAMS, stream_create_error, stream_create_request
from loom_protocol.logconfig import broker_logging, tracing_enabled

from . import ops
from .children import NatsChildTasks
from .config import Settings
from .emitter import EventEmitter
from .execution import Executor
from .heartbeat import Heartbeater
from .journal import KvJournal
from .loading import load_agents
from .outbox import Outbox
from .reporting import StatusReporter
from .runtime import LoggingInterceptor, MemoryStore, make_provider
from .runtime.durable import StepJournal
from .runtime.providers import OpenAICompatibleProvider, load_prices
from .sessions import KvSessionStore
from .state import State
from .streaming import NatsAnswerStream
from .subscribers import Assignments, build_router

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    traced = tracing_enabled(os.environ)

    async def on_reconnected() -> None:
        await heart.announce()  # at once: the registry must not take the gap for a death

    nats_conn = settings.nats_connection(settings.nats_url)
    broker = NatsBroker(
        nats_conn.servers,
        **nats_conn.options,
        middlewares=[NatsTelemetryMiddleware()] if traced else [],
        graceful_timeout=settings.graceful_timeout_s,
        reconnected_cb=on_reconnected,
        **broker_logging(),
    )
    provider = make_provider(
        settings.llm_provider,
        base_url=settings.llm_base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        prices=load_prices(settings.llm_prices),
        temperature=settings.llm_temperature,
        tool_choice=settings.llm_tool_choice,
    )
    agents = load_agents(settings.agent_ids, provider)  # AgentLoadError: one line, see __main__
    reporter = StatusReporter(
        broker,
        settings.instance_id,
        retries=settings.report_retries,
        retry_backoff_s=settings.report_backoff_s,
        outbox=Outbox(broker, ack_timeout_s=settings.publish_timeout_s),
    )
    emitter = EventEmitter(
        broker,
        f"/workers/{settings.instance_id}",
        settings.event_buffer,
        instance_id=settings.instance_id,
        retries=settings.event_retries,
        retry_backoff_s=settings.event_backoff_s,
        outbox=Outbox(broker, ack_timeout_s=settings.publish_timeout_s),
    )

    def children(task: Task, agent_id: str, journal: StepJournal) -> NatsChildTasks:
        return NatsChildTasks(broker, task, agent_id, journal)

    answers = Outbox(broker)  # answer chunks of streaming tasks, core NATS
    executor = Executor(
        settings.instance_id,
        agents,
        reporter,
        emitter,
        children,
        [LoggingInterceptor(level=logging.DEBUG)],
        settings.worker_concurrency,
        capture_content=settings.capture_content,
        memory=MemoryStore(),  # replaced by the shared KV store at start-up (memory_store=kv)
        answer_stream=lambda task: NatsAnswerStream(answers, task),
        approval_tools=settings.approval_tool_names,
        running_report_after_s=settings.running_report_after_s,
    )
    heart = Heartbeater(broker, executor, settings.heartbeat_interval_s, VERSION)
    broker.include_router(build_router(executor, reporter))
    assignments = Assignments(executor, reporter, traced=traced)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nc = await broker.connect()
        for spec in ALL_STREAMS:  # create where missing; one configured otherwise stays as it is
            reply = await nc.request(*stream_create_request(spec, settings.nats_replicas), timeout=5)
            if error := stream_create_error(reply.data):
                log.warning("stream %s left as it is: %s", spec.name, error)
        if settings.memory_store == "kv":
            executor.memory = await KvSessionStore.open(
                nc.jetstream(),
                settings.memory_bucket,
                ttl_s=settings.memory_ttl_s,
                timeout_s=settings.memory_timeout_s,
                replicas=settings.nats_replicas,
                max_retries=settings.memory_max_retries,
            )
        if settings.durable:
            executor.journal = await KvJournal.open(
                nc.jetstream(),
                settings.journal_bucket,
                ttl_s=settings.journal_ttl_s,
                timeout_s=settings.journal_timeout_s,
                replicas=settings.nats_replicas,
            )
        emitter.start()
        await broker.start()
        await assignments.start(nc)
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
            await assignments.stop()
            await broker.stop()
            if isinstance(provider, OpenAICompatibleProvider):
                await provider.aclose()  # its HTTP connection pool

    app = FastAPIOffline(  # /docs from the package's own Swagger UI files: no CDN
        title="Loom agent-worker",
        version=VERSION,
        lifespan=lifespan,
        exception_handlers=ops.HTTP_ERROR_HANDLERS,
    )
    app.state.loom = State(broker, executor)
    app.include_router(ops.router)
    return app
