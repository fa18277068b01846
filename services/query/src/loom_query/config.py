"""Query settings, from LOOM_* environment variables (and the repo's .env)."""

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
