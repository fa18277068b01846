"""Agent-worker settings, from LOOM_* environment variables (and the repo's .env)."""

import os
import re
import socket
from typing import Literal

from loom_protocol.journal import JOURNAL_BUCKET
from loom_protocol.memory import SESSIONS_BUCKET
from loom_protocol.settings import NATS_URL, ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from loom_agent_worker.runtime.providers.pricing import load_prices


def _default_instance_id() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{socket.gethostname()}-{os.getpid()}")


class Settings(BaseSettings, ServiceSettings):
    nats_url: str = NATS_URL
    http_port: int = 8100

    instance_id: str = Field(default_factory=_default_instance_id, pattern=r"^[A-Za-z0-9_-]+$")
    # comma-separated: demo ids, package.module:attribute, entrypoints (see loading.py)
    worker_agents: str = "echo,calculator,orchestrator"
    worker_concurrency: int = Field(default=16, ge=1)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    drain_timeout_s: float = Field(default=20.0, ge=0)
    child_timeout_s: float = Field(default=120.0, gt=0)
    event_buffer: int = Field(default=10_000, ge=1)
    # publishing (outbox.py): every JetStream publish waits at most publish_timeout_s for its ack;
    # a status report without one is published again (same Nats-Msg-Id) report_retries times,
    # the backoff doubling from report_backoff_s; an event batch event_retries times
    publish_timeout_s: float = Field(default=5.0, gt=0)
    report_retries: int = Field(default=5, ge=0, le=50)
    report_backoff_s: float = Field(default=0.5, ge=0)
    # `running` is reported once a task has run this long (a task done sooner goes from
    # dispatched straight to its outcome); 0 reports it at once
    running_report_after_s: float = Field(default=0.25, ge=0, le=60)
    # 6 from 0.25 s: about 16 s of retries, longer than a stream's leader election on a cluster
    event_retries: int = Field(default=6, ge=0, le=50)
    event_backoff_s: float = Field(default=0.25, ge=0)

    llm_provider: str = "scripted"
    llm_base_url: str = "http://127.0.0.1:11434/v1"
    llm_model: str = "scripted"
    llm_api_key: str = ""
    llm_timeout_s: float = Field(default=60.0, gt=0)  # per attempt
    llm_max_retries: int = Field(default=3, ge=0, le=20)  # 429/5xx/timeouts, backoff + jitter
    llm_prices: str = ""  # JSON object or JSON file path; see runtime/providers/pricing.py
    llm_temperature: float | None = Field(default=None, ge=0, le=2)  # unset: the server's default
    # unset: not sent; "auto" for servers that need it (llama.cpp), which vLLM refuses unless enabled
    llm_tool_choice: Literal["", "auto", "none", "required"] = ""
    capture_content: bool = True  # prompt and completion text in the LLM events

    # session memory (sessions.py): "kv" = the JetStream KV bucket every instance shares,
    # "local" = this process only (a session split across instances sees split memories)
    memory_store: Literal["kv", "local"] = "kv"
    memory_bucket: str = Field(default=SESSIONS_BUCKET, pattern=r"^[A-Za-z0-9_-]+$")
    memory_ttl_s: float = Field(default=7 * 86_400.0, ge=0)  # a session kept after its last write; 0: kept
    memory_max_retries: int = Field(default=5, ge=0, le=100)  # save conflicts re-applied
    memory_timeout_s: float = Field(default=5.0, gt=0)  # per KV read or write

    # durable execution (journal.py): each step's outcome in a JetStream KV bucket, so that a later
    # attempt of a task resumes from the last recorded step; false: every attempt starts over
    durable: bool = True
    journal_bucket: str = Field(default=JOURNAL_BUCKET, pattern=r"^[A-Za-z0-9_-]+$")
    journal_ttl_s: float = Field(default=7 * 86_400.0, ge=0)  # an entry kept after it was written
    journal_timeout_s: float = Field(default=5.0, gt=0)  # per KV read or write
    # comma-separated tool names whose calls need a person's approval on this worker
    approval_tools: str = ""

    @field_validator("llm_prices")
    @classmethod
    def _prices_load(cls, value: str) -> str:
        load_prices(value)  # refuse a bad price table at start-up, with the reason
        return value

    @property
    def approval_tool_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.approval_tools.split(",") if name.strip())

    @property
    def agent_ids(self) -> list[str]:
        return [a.strip() for a in self.worker_agents.split(",") if a.strip()]
