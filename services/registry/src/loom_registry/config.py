"""Registry settings, from LOOM_* environment variables (and the repo's .env)."""

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOOM_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_host: str = "127.0.0.1"
    http_port: int = 8002
    log_level: str = "INFO"

    redis_prefix: str = "loom"
    missed_heartbeats: int = 3
    sweep_interval_s: float = 0.25
    startup_grace_s: float = 3.0
    consul_url: str = ""  # e.g. http://127.0.0.1:8500 to mirror instances into Consul; empty: off
    consul_token: str | None = None
    pick_strategy: Literal["round_robin", "least_loaded"] = "round_robin"
