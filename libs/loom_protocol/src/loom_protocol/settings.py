"""The settings every Loom service reads, as a contract: their names, defaults and prefix.

Each service's ``Settings`` is a pydantic-settings class that takes its fields and the way
they are read from :class:`ServiceSettings` and adds its own (its HTTP port among them)::

    class Settings(BaseSettings, ServiceSettings):  # BaseSettings first: see ServiceSettings
        nats_url: str = NATS_URL
        http_port: int = 8001

This module does not import pydantic-settings: it only names what every service, tool and
chart must agree on (``LOOM_HTTP_HOST``, ``LOOM_LOG_LEVEL``, ``LOOM_NATS_URL``, ...) and how
they are read.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr

from loom_protocol.nats_auth import USER_PATTERN, inbox_prefix

__all__ = [
    "DATABASE_URL",
    "ENV_PREFIX",
    "NATS_URL",
    "REDIS_URL",
    "NatsConnection",
    "ServiceSettings",
    "nats_connection",
    "nats_servers",
    "redacted",
]

ENV_PREFIX = "LOOM_"
"""The prefix of every setting's environment variable: ``http_host`` is ``LOOM_HTTP_HOST``."""

NATS_URL = "nats://127.0.0.1:4222"
"""Default of ``LOOM_NATS_URL``: one server, or the servers of a cluster separated by commas
(``nats://n1:4222,nats://n2:4222,nats://n3:4222``); see :func:`nats_servers`."""

REDIS_URL = "redis://127.0.0.1:6379/0"
"""Default of ``LOOM_REDIS_URL``."""

DATABASE_URL = "postgresql://postgres@127.0.0.1:5433/loom"
"""Default of ``LOOM_DATABASE_URL`` (TimescaleDB)."""


_ORIGIN = r"(\*|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?)"
_CORS_ORIGINS = rf"^\s*({_ORIGIN}\s*(,\s*{_ORIGIN}\s*)*)?$"


class ServiceSettings(BaseModel):
    """The settings every service has, whatever else it needs, and how all of them are read.

    Its ``model_config`` holds pydantic-settings' options (hence typed loosely here): values
    come from ``LOOM_*`` environment variables, then from a ``.env`` file; an empty variable
    counts as unset, and variables no field names are ignored. pydantic merges the
    configuration of a class's bases from left to right, so a service's class must list
    ``BaseSettings`` *before* this mixin for these options to win over pydantic-settings'
    defaults.

    Attributes:
        http_host: Address the HTTP server binds (``LOOM_HTTP_HOST``).
        log_level: Root log level (``LOOM_LOG_LEVEL``): ``DEBUG``, ``INFO``, ...
        graceful_timeout_s: At shutdown, how long a NATS subscriber waits for the messages it
            is handling before it stops anyway (``LOOM_GRACEFUL_TIMEOUT_S``).
        nats_replicas: How many servers of a NATS cluster keep a copy of each stream and KV
            bucket a service creates (``LOOM_NATS_REPLICAS``; 1 on a single server, 3 on a
            3-node cluster). Applies when the stream or bucket is created: one that exists keeps
            its own.
        api_keys: The fixed API keys this service accepts (``LOOM_API_KEYS``: comma-separated,
            each ``key`` or ``scope+scope:key``; see :mod:`loom_protocol.auth`). With none here
            and none stored in the ``LOOM_API_KEYS`` bucket, the service's API is open.
        api_keys_refresh_s: How often the stored keys are re-read (``LOOM_API_KEYS_REFRESH_S``):
            the longest a revoked key keeps working.
        nats_user: The NATS user this service connects as (``LOOM_NATS_USER``; its role's
            permissions, see :mod:`loom_protocol.nats_auth`); unset: the URL's own credentials,
            if any.
        nats_password: That user's password (``LOOM_NATS_PASSWORD``).
        nats_creds: A ``.creds`` file (user JWT and nkey seed) to connect with instead
            (``LOOM_NATS_CREDS``).
        oidc_issuer: An OpenID Connect provider whose access tokens the API accepts beside API
            keys (``LOOM_OIDC_ISSUER``, the tokens' ``iss``); unset: API keys only.
        oidc_audience: What those tokens' ``aud`` must include (``LOOM_OIDC_AUDIENCE``).
        oidc_jwks_url: The provider's signing keys (``LOOM_OIDC_JWKS_URL``); unset: the
            ``jwks_uri`` of the issuer's discovery document.
        oidc_scopes_claim: The claim that lists a token's Loom scopes (``LOOM_OIDC_SCOPES_CLAIM``).
        cors_origins: The web origins whose pages may call this service's API from a browser
            (``LOOM_CORS_ORIGINS``: comma-separated ``https://host[:port]``, or ``*``); empty (the
            default): none, no CORS headers at all. Studio, served by the query service, is
            same-origin and needs none.
        gc_threshold: Net allocations between two young-generation garbage collections
            (``LOOM_GC_THRESHOLD``; Python's default is 700), start-up objects frozen out of
            collection (:mod:`loom_protocol.collector`); 0 leaves the interpreter's settings.
    """

    model_config: ClassVar[Any] = {
        "env_prefix": ENV_PREFIX,
        "env_file": ".env",
        "env_ignore_empty": True,
        "extra": "ignore",
    }

    http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    graceful_timeout_s: float = 10.0
    nats_replicas: int = Field(default=1, ge=1, le=5)
    api_keys: SecretStr = SecretStr("")
    api_keys_refresh_s: float = Field(default=2.0, gt=0, le=60)
    nats_user: str = Field(default="", pattern=f"^$|{USER_PATTERN}")
    nats_password: SecretStr = SecretStr("")
    nats_creds: str = ""
    oidc_issuer: str = ""
    oidc_audience: str = "loom"
    oidc_jwks_url: str = ""
    oidc_scopes_claim: str = "scope"
    cors_origins: str = Field(default="", pattern=_CORS_ORIGINS)
    gc_threshold: int = Field(default=20_000, ge=0)

    def cors_options(self) -> dict[str, Any] | None:
        """Keyword arguments for Starlette's ``CORSMiddleware`` (``app.add_middleware(
        CORSMiddleware, **options)``) when ``cors_origins`` names any, else None: CORS off.
        Browsers may send the API key (``Authorization``) and JSON, never cookies."""
        origins = [o.strip() for o in self.cors_origins.split(",") if o.strip()]
        if not origins:
            return None
        return {
            "allow_origins": origins,
            "allow_methods": ["GET", "POST", "PUT", "DELETE"],
            "allow_headers": ["authorization", "content-type"],
            "allow_credentials": False,
            "max_age": 600,
        }

    def nats_connection(self, url: str) -> NatsConnection:
        """How to connect to the NATS servers of ``url`` with this service's credentials."""
        return nats_connection(url, self.nats_user, self.nats_password.get_secret_value(), self.nats_creds)


def nats_servers(url: str) -> list[str]:
    """The servers ``LOOM_NATS_URL`` names: one URL, or several separated by commas (the nodes
    of a cluster; a client connects to one and fails over to the others).

    Args:
        url: The setting's value.

    Returns:
        Each URL, stripped, in the order given; at least one.

    Raises:
        ValueError: If no URL is given.
    """
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError(f"no NATS server URL in {url!r}")
    return servers


class NatsConnection(NamedTuple):
    """What nats-py's ``connect`` and FastStream's ``NatsBroker`` take to reach Loom's NATS as one
    user: ``nats.connect(c.servers, **c.options)``, ``NatsBroker(c.servers, **c.options)``.

    Attributes:
        servers: The server URLs, each with the user's credentials when a user is named.
        options: ``inbox_prefix`` (the user's own inboxes) and ``user_credentials`` (a creds file)
            where they apply.
    """

    servers: list[str]
    options: dict[str, Any]

    @property
    def inbox_prefix(self) -> bytes:
        """The prefix of this user's inboxes with its trailing dot, as FastStream's pull
        subscribers take it (``inbox_prefix=``; they do not follow the connection's)."""
        return f"{self.options.get('inbox_prefix', '_INBOX')}.".encode()


_URL_UNSAFE = set(":/@?#%[] ")


def nats_connection(url: str, user: str = "", password: str = "", creds: str = "") -> NatsConnection:
    """The servers of ``url`` and the options to connect to them as ``user``.

    A URL that carries credentials of its own (``nats://user:pass@host:4222``) keeps them; its
    user then names the inbox prefix.

    Args:
        url: ``LOOM_NATS_URL``: one URL or several separated by commas.
        user: The user (``LOOM_NATS_USER``); empty: none beyond the URL's.
        password: Its password (``LOOM_NATS_PASSWORD``).
        creds: A ``.creds`` file (``LOOM_NATS_CREDS``); empty: none.

    Returns:
        The servers and the connect options.

    Raises:
        ValueError: If no URL is given, the user name is invalid, or the password holds a
            character a URL cannot carry unescaped.
    """
    if password and _URL_UNSAFE.intersection(password):
        raise ValueError("the NATS password may not contain any of ':/@?#%[] ' (it travels in the URL)")
    servers = []
    named = ""
    for server in nats_servers(url):
        parts = urlsplit(server)
        if parts.username:
            named = named or parts.username
        elif user:
            userinfo = f"{user}:{password}" if password else user
            parts = parts._replace(netloc=f"{userinfo}@{parts.netloc}")
            server = urlunsplit(parts)
            named = user
        servers.append(server)
    options: dict[str, Any] = {}
    if named:
        options["inbox_prefix"] = inbox_prefix(named)
    if creds:
        options["user_credentials"] = creds
    return NatsConnection(servers, options)


def redacted(urls: str) -> str:
    """``urls`` (one, or several comma-separated, as ``LOOM_NATS_URL``) with each password shown as
    ``***``: for what is printed or written to a report."""
    return ",".join(_redacted_one(url) for url in urls.split(","))


def _redacted_one(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
