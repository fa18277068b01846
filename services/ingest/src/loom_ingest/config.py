"""Ingest settings, from LOOM_* environment variables (and the repo's .env)."""

from pathlib import Path

from loom_protocol import MAX_EVENT_BYTES, PriceTable, prices_from_json
from loom_protocol.settings import DATABASE_URL, NATS_URL, ServiceSettings
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings


class Settings(BaseSettings, ServiceSettings):
    nats_url: str = NATS_URL
    database_url: str = DATABASE_URL
    http_port: int = 8003

    durable_prefix: str = Field(default="ingest", pattern=r"^[A-Za-z0-9_-]+$")
    # batching (a group commit): a batch is everything read while the previous one was committed,
    # at most batch_size messages, pulled at most once per batch_linger_s while messages keep
    # coming (a pull that came back full asks again at once)
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

    # HTTP ingest (OTLP /v1/traces and CloudEvents /api/events)
    http_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    http_max_inflight: int = Field(default=32, ge=1)
    http_publish_timeout_s: float = Field(default=10.0, gt=0)
    http_retry_after_s: int = Field(default=1, ge=1)
    # prices of the LLM calls in OTLP spans that carry no cost: JSON or a JSON file path, as the
    # worker's LOOM_LLM_PRICES over loom_protocol.pricing's defaults
    llm_prices: str = ""
    # a second port serving the same app, e.g. OTLP/HTTP's conventional 4318 (None: only http_port)
    otlp_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("llm_prices")
    @classmethod
    def _prices_load(cls, value: str) -> str:
        read_prices(value)  # refuse a bad price table at start-up, with the reason
        return value

    @property
    def price_table(self) -> PriceTable:
        return read_prices(self.llm_prices)


def read_prices(setting: str) -> PriceTable:
    """``LOOM_LLM_PRICES``: JSON, or the path of a JSON file, over the default prices."""
    text = setting.strip()
    if text and not text.startswith(("{", "[")):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"LOOM_LLM_PRICES: cannot read price file {setting!r}: {exc.strerror}") from None
    return prices_from_json(text)
