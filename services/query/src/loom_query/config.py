"""Query settings, from LOOM_* environment variables (and the repo's .env)."""

from loom_protocol.settings import DATABASE_URL, NATS_URL, ServiceSettings
from pydantic import Field
from pydantic_settings import BaseSettings


class Settings(BaseSettings, ServiceSettings):
    nats_url: str = NATS_URL
    database_url: str = DATABASE_URL
    http_port: int = 8004
    # Studio's proxy (/studio-api/dispatcher/..., /studio-api/replay/...): the only two upstreams
    dispatcher_url: str = "http://127.0.0.1:8001"
    replay_url: str = "http://127.0.0.1:8005"
    # the longest a proxied request may take (connect, send, wait for and read the answer)
    proxy_timeout_s: float = Field(default=30.0, gt=0)
    # pages of events one export (GET /api/tasks/{task_id}/events.jsonl) reads at a time
    export_page_size: int = Field(default=1000, ge=1, le=10_000)

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
    # characters of parameters / result (JSON text) and error a task summary shows (/api/tasks)
    task_preview_chars: int = Field(default=200, ge=1)
    # most tasks listed by /api/sessions/{session_id}
    session_tasks_limit: int = Field(default=1000, ge=1)
