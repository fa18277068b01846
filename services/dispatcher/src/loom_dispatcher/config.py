"""Dispatcher settings, from LOOM_* environment variables (and the repo's .env)."""

from loom_protocol import MAX_STRIKES, STRIKE_WINDOW_S, ApprovalTimeoutAction
from loom_protocol.settings import NATS_URL, REDIS_URL, ServiceSettings
from pydantic import Field
from pydantic_settings import BaseSettings


class Settings(BaseSettings, ServiceSettings):
    nats_url: str = NATS_URL
    redis_url: str = REDIS_URL
    http_port: int = 8001

    redis_prefix: str = "loom"
    redis_max_connections: int = 128
    durable_prefix: str = "dispatcher"
    max_attempts: int = 3
    task_timeout_s: float = 60.0
    no_instance_timeout_s: float = 10.0
    retry_backoff_s: float = 0.2
    pick_timeout_s: float = 1.0
    # pick from the registry's state in the same Redis (one script call); false: ask the
    # registry over NATS (loom.registry.pick), e.g. when the registry keeps another Redis
    pick_from_redis: bool = True
    # an instance with this many timed-out or failed attempts within strike_window_s is picked
    # only when no other instance of the agent is live (0: never kept out)
    max_strikes: int = Field(default=MAX_STRIKES, ge=0)
    strike_window_s: float = Field(default=STRIKE_WINDOW_S, gt=0)
    sweep_interval_s: float = 0.2
    max_parameters_bytes: int = 1_048_576
    # submissions per API key and second (REST and A2A; rate_limit.py), and at once; 0: no limit
    submit_rate_per_key: float = Field(default=1000.0, ge=0)
    submit_burst_per_key: int = Field(default=2000, ge=1)
    max_wait_s: float = 300.0
    # how long a task may wait in input_required for a person's decision (task metadata
    # approvalTimeoutS overrides it), and what then happens (metadata approvalTimeoutAction)
    approval_timeout_s: float = Field(default=86_400.0, gt=0)
    approval_timeout_action: ApprovalTimeoutAction = ApprovalTimeoutAction.REJECT
    # at most this many tasks visited when a cancellation cascades down a task's children
    max_cascade: int = Field(default=1000, ge=1)
