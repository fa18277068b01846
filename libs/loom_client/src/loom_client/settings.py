"""Where the client finds Loom: service URLs, the NATS URL, the API key and the timeout.

Values come from the arguments a client is built with, else from ``LOOM_*`` environment
variables, else from a ``.env`` file in the working directory (``make up`` writes one), else the
defaults below, which are the ports ``make up`` serves on.
"""

from __future__ import annotations

from loom_protocol.nats_auth import USER_PATTERN
from loom_protocol.settings import ENV_PREFIX, NATS_URL, NatsConnection, nats_connection
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DISPATCHER_URL",
    "QUERY_URL",
    "REGISTRY_URL",
    "REPLAY_URL",
    "ClientSettings",
]

DISPATCHER_URL = "http://127.0.0.1:8001"
"""Default of ``LOOM_DISPATCHER_URL``: submit, get, cancel, approve, reject, answer streams."""

REGISTRY_URL = "http://127.0.0.1:8002"
"""Default of ``LOOM_REGISTRY_URL``: the agents and their live instances."""

QUERY_URL = "http://127.0.0.1:8004"
"""Default of ``LOOM_QUERY_URL``: stored tasks and events, sessions, the live feed."""

REPLAY_URL = "http://127.0.0.1:8005"
"""Default of ``LOOM_REPLAY_URL``: replay sessions over recorded events."""


class ClientSettings(BaseSettings):
    """The settings of :class:`~loom_client.LoomClient` and the ``loom`` command.

    Attributes:
        dispatcher_url: The dispatcher (``LOOM_DISPATCHER_URL``); several replicas as a
            comma-separated list, tried in turn when one cannot answer.
        registry_url: The registry (``LOOM_REGISTRY_URL``).
        query_url: The query service (``LOOM_QUERY_URL``).
        replay_url: The replay service (``LOOM_REPLAY_URL``).
        nats_url: NATS, for submitting over JetStream (``LOOM_NATS_URL``).
        nats_user: The NATS user to submit as (``LOOM_NATS_USER``; the ``client`` role's
            permissions suffice); unset: the URL's own credentials, if any.
        nats_password: That user's password (``LOOM_NATS_PASSWORD``).
        nats_creds: A ``.creds`` file to connect with instead (``LOOM_NATS_CREDS``).
        api_key: Sent as ``Authorization: Bearer <key>`` when set (``LOOM_API_KEY``).
        client_timeout_s: The longest one HTTP call may take, connecting included
            (``LOOM_CLIENT_TIMEOUT_S``); waits add their own duration to it.
        client_retries: How many times a call that got no answer, or a 502/503/504, is sent
            again (``LOOM_CLIENT_RETRIES``; 0: never), to the next dispatcher URL if several.
        client_retry_backoff_s: The wait before the first retry, doubled for each next one up
            to ``client_retry_max_backoff_s`` (``LOOM_CLIENT_RETRY_BACKOFF_S``).
        client_retry_max_backoff_s: The longest wait between two tries
            (``LOOM_CLIENT_RETRY_MAX_BACKOFF_S``).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    dispatcher_url: str = DISPATCHER_URL
    registry_url: str = REGISTRY_URL
    query_url: str = QUERY_URL
    replay_url: str = REPLAY_URL
    nats_url: str = NATS_URL
    nats_user: str = Field(default="", pattern=f"^$|{USER_PATTERN}")
    nats_password: SecretStr = SecretStr("")
    nats_creds: str = ""
    api_key: SecretStr | None = None
    client_timeout_s: float = Field(default=10.0, gt=0)
    client_retries: int = Field(default=6, ge=0, le=100)
    client_retry_backoff_s: float = Field(default=0.2, ge=0)
    client_retry_max_backoff_s: float = Field(default=2.0, ge=0)

    @property
    def dispatcher_urls(self) -> list[str]:
        """Every dispatcher URL ``dispatcher_url`` lists, without trailing slashes."""
        urls = [url.strip().rstrip("/") for url in self.dispatcher_url.split(",") if url.strip()]
        return urls or [DISPATCHER_URL]

    def nats_connection(self) -> NatsConnection:
        """The NATS servers and connect options of ``nats_url`` with these credentials."""
        return nats_connection(
            self.nats_url, self.nats_user, self.nats_password.get_secret_value(), self.nats_creds
        )

    def headers(self) -> dict[str, str]:
        """The headers every request carries: the bearer token when an API key is set."""
        if self.api_key is None or not self.api_key.get_secret_value():
            return {}
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}
