"""Registry settings, from LOOM_* environment variables (and the repo's .env)."""

from loom_protocol import PickStrategy
from loom_protocol.settings import NATS_URL, REDIS_URL, ServiceSettings
from pydantic_settings import BaseSettings


class Settings(BaseSettings, ServiceSettings):
    nats_url: str = NATS_URL
    redis_url: str = REDIS_URL
    http_port: int = 8002

    redis_prefix: str = "loom"
    missed_heartbeats: int = 3
    sweep_interval_s: float = 0.25
    startup_grace_s: float = 3.0
    # evictions are held while the registry's broker connection or its Redis is down and this
    # long after it is back: heartbeats meanwhile had nowhere to go or to be stored (eviction.py)
    reconnect_grace_s: float = 3.0
    consul_url: str = ""  # e.g. http://127.0.0.1:8500 to mirror instances into Consul; empty: off
    consul_token: str | None = None
    pick_strategy: PickStrategy = "round_robin"  # the dispatcher follows it (stored with heartbeats)
