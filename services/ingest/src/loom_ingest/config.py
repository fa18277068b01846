"""Ingest settings, from LOOM_* environment variables (and the repo's .env)."""

from loom_protocol import MAX_EVENT_BYTES
from loom_protocol.settings import DATABASE_URL, NATS_URL, ServiceSettings
from pydantic import Field
from pydantic_settings import BaseSettings


class Settings(BaseSettings, ServiceSettings):
    nats_url: str = NATS_URL
    database_url: str = DATABASE_URL
    http_port: int = 8003

    durable_prefix: str = Field(default="ingest", pattern=r"^[A-Za-z0-9_-]+$")
    # batching: a batch is written when it has batch_size messages, or batch_linger_s after
    # its first message arrived, whichever comes first
    batch_size: int = Field(default=2000, ge=1, le=10_000)
    batch_linger_s: float = Field(default=0.05, ge=0, le=5)
    fetch_wait_s: float = Field(default=1.0, gt=0)
    ack_wait_s: float = Field(default=10.0, gt=0)
    max_ack_pending: int = Field(default=20_000, ge=1)
    max_event_bytes: int = Field(default=MAX_EVENT_BYTES, ge=1)
    db_retry_min_s: float = Field(default=0.1, gt=0)
    db_retry_max_s: float = Field(default=5.0, gt=0)
    db_pool_size: int = Field(default=6, ge=2)
    db_ping_timeout_s: float = Field(default=1.0, gt=0)

    retention_days: int = Field(default=7, ge=1)
    metrics_retention_days: int = Field(default=30, ge=1)
    compress_after_hours: float = Field(default=24.0, gt=0)
    maintenance_interval_s: float = Field(default=600.0, gt=0)

    ws_max_batch_events: int = Field(default=10_000, ge=1)
    ws_publish_timeout_s: float = Field(default=10.0, gt=0)
