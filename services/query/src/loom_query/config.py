"""Query settings, from LOOM_* environment variables (and the repo's .env)."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOM_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    nats_url: str = "nats://127.0.0.1:4222"
    database_url: str = "postgresql://postgres@127.0.0.1:5433/loom"
    http_host: str = "127.0.0.1"
    http_port: int = 8004
    log_level: str = "INFO"

    db_pool_size: int = Field(default=8, ge=1)
    db_retry_max_s: float = Field(default=5.0, gt=0)
    db_ping_timeout_s: float = Field(default=1.0, gt=0)
    statement_timeout_s: float = Field(default=10.0, gt=0)

    # /ws/events: events buffered per client before it counts as slow and events are dropped
    ws_queue_size: int = Field(default=1000, ge=1)
    # /api/topology without trace_id or start_time looks at this much recent history
    topology_window_s: float = Field(default=86_400.0, gt=0)
    # most events returned with one task by /api/tasks/{task_id}
    task_events_limit: int = Field(default=10_000, ge=1)
    # most memory events replayed by /api/memory/{node_id}
    memory_events_limit: int = Field(default=50_000, ge=1)
