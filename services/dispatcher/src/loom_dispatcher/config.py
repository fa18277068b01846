"""Dispatcher settings, from LOOM_* environment variables (and the repo's .env)."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOM_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_host: str = "127.0.0.1"
    http_port: int = 8001
    log_level: str = "INFO"

    redis_prefix: str = "loom"
    redis_max_connections: int = 128
    durable_prefix: str = "dispatcher"
    max_attempts: int = 3
    task_timeout_s: float = 60.0
    no_instance_timeout_s: float = 10.0
    retry_backoff_s: float = 0.2
    pick_timeout_s: float = 1.0
    sweep_interval_s: float = 0.2
    max_parameters_bytes: int = 1_048_576
    max_wait_s: float = 300.0
