"""Settings of the A2A server, from ``LOOM_A2A_*`` environment variables (and the repo's .env)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class A2ASettings(BaseSettings):
    """What the A2A endpoints need beyond the dispatcher's own settings.

    Attributes:
        public_url: The base URL clients reach this dispatcher at, as written in the agent cards
            (``https://loom.example.com``); empty: the URL of the request that asked for the card.
        list_window: How many of the newest tasks created over A2A ``ListTasks`` sees, per agent,
            per context and in all.
        card_wait_s: How long a card request for an agent the registry knows, but whose
            heartbeat this replica has not heard yet, waits for one.
        cancel_wait_s: How long ``CancelTask`` waits for a task at a worker to end cancelled.
        record_wait_s: How long a stream waits for the dispatcher to record the interrupted state
            a worker reported (so that the answering message finds the task waiting).
        refusal_wait_s: How long ``SendMessage`` waits for a task for an unknown agent to be
            refused (``TASK_STATE_REJECTED``).
        keepalive_s: An SSE comment line this often on a quiet stream.
        max_request_bytes: The largest JSON-RPC request body read.
    """

    model_config = SettingsConfigDict(
        env_prefix="LOOM_A2A_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    public_url: str = ""
    list_window: int = Field(default=1000, ge=1, le=100_000)
    card_wait_s: float = Field(default=2.0, ge=0)
    cancel_wait_s: float = Field(default=5.0, ge=0)
    record_wait_s: float = Field(default=5.0, gt=0)
    refusal_wait_s: float = Field(default=5.0, gt=0)
    keepalive_s: float = Field(default=15.0, gt=0)
    max_request_bytes: int = Field(default=2_097_152, ge=1024)
