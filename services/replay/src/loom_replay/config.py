"""Replay settings, from LOOM_* environment variables (and the repo's .env)."""

from loom_protocol.settings import DATABASE_URL, NATS_URL, REDIS_URL, ServiceSettings
from pydantic import Field
from pydantic_settings import BaseSettings


class Settings(BaseSettings, ServiceSettings):
    redis_url: str = REDIS_URL
    redis_prefix: str = Field(default="loom", pattern=r"^[A-Za-z0-9_:-]+$")
    database_url: str = DATABASE_URL
    dispatcher_url: str = "http://127.0.0.1:8001"
    nats_url: str = NATS_URL  # only to read the API keys stored in the LOOM_API_KEYS bucket
    http_port: int = 8005

    db_pool_size: int = Field(default=8, ge=1)
    session_ttl_s: float = Field(default=3600.0, gt=0)
    page_size: int = Field(default=1000, ge=1, le=10_000)
    # checkpoints of the fold: at least checkpoint_every events apart (more for huge traces: at
    # most max_checkpoints), and a new one only once the events folded since the last one, times
    # checkpoint_bytes_per_event, reach that one's size (so writing checkpoints never costs much
    # more than folding the events does, however large the state grows)
    checkpoint_every: int = Field(default=1000, ge=1)
    max_checkpoints: int = Field(default=256, ge=1)
    checkpoint_bytes_per_event: int = Field(default=500, ge=1)
    cursor_cache_sessions: int = Field(default=16, ge=0)  # states at the cursor kept in memory
    lock_timeout_s: float = Field(default=60.0, gt=0)
    lock_wait_s: float = Field(default=30.0, ge=0)
    # deterministic replay and forks
    max_task_events: int = Field(default=20_000, ge=1)
    run_wait_s: float = Field(default=60.0, ge=0, le=300)
    # play: the longest pause between two events, whatever their original spacing
    play_max_gap_s: float = Field(default=5.0, gt=0)
