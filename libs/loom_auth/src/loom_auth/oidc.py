"""OpenID Connect: the services accept an identity provider's access tokens beside API keys.

A token is a JWT signed by the provider (RS256/ES256/PS256/EdDSA; never a shared secret, never
``none``), whose ``iss`` is ``LOOM_OIDC_ISSUER``, whose ``aud`` includes ``LOOM_OIDC_AUDIENCE``,
that has not expired (30 s of clock skew allowed), and that names a subject (``sub``). Its Loom
scopes are the values of the claim ``LOOM_OIDC_SCOPES_CLAIM`` (``scope``: a space-separated
string, or a list) that are Loom scope names, bare (``read``) or prefixed (``loom:read``); a
token with none of them is refused with 403.

The signing keys come from the provider's JWKS (``LOOM_OIDC_JWKS_URL``, or the ``jwks_uri`` of
``<issuer>/.well-known/openid-configuration``), fetched by PyJWT's ``PyJWKClient`` on first use
and again for a key id it does not know, cached for five minutes. Every fetch is bounded
(``timeout_s``) and runs off the event loop; a provider that cannot be reached makes requests
with tokens answer 503 (API keys keep working).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import urllib.request
from collections.abc import Iterable
from typing import Any

import jwt
from loom_protocol.auth import ApiKeyRecord, InvalidToken, Scope
from loom_protocol.settings import ServiceSettings
from pydantic import BaseModel

__all__ = ["ALGORITHMS", "OidcSettings", "OidcVerifier", "oidc_verifier"]

ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")
"""Asymmetric algorithms only: a provider's public key can never be used as an HMAC secret."""

_SCOPE_PREFIX = "loom:"
_MAX_TOKEN_CHARS = 16_384


class OidcSettings(BaseModel):
    """What :class:`OidcVerifier` checks a token against.

    Attributes:
        issuer: The provider's issuer URL (the tokens' ``iss``).
        audience: What the tokens' ``aud`` must include.
        jwks_url: The provider's JWKS; empty: from the issuer's discovery document.
        scopes_claim: The claim that lists the token's scopes.
        timeout_s: The longest one fetch from the provider may take.
        leeway_s: Clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    """

    issuer: str
    audience: str
    jwks_url: str = ""
    scopes_claim: str = "scope"
    timeout_s: float = 5.0
    leeway_s: float = 30.0


def _fetch_json(url: str, timeout_s: float) -> Any:
    request = urllib.request.Request(url, headers={"accept": "application/json", "user-agent": "loom"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 (the operator's URL)
        return json.load(answer)


def _scopes(value: Any) -> list[Scope]:
    names: Iterable[Any] = (
        value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    )
    known = {scope.value for scope in Scope}
    found = set()
    for name in names:
        if isinstance(name, str):
            bare = name.removeprefix(_SCOPE_PREFIX)
            if bare in known:
                found.add(Scope(bare))
    return sorted(found)


class OidcVerifier:
    """Checks an identity provider's JWTs (a :class:`~loom_protocol.auth.TokenVerifier`)."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._client: jwt.PyJWKClient | None = None

    def _jwks_client(self) -> jwt.PyJWKClient:
        """The JWKS client, made on first use (after discovery when no JWKS URL is set)."""
        url = self.settings.jwks_url
        if not url:
            discovery = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = _fetch_json(discovery, self.settings.timeout_s)
            url = document.get("jwks_uri", "") if isinstance(document, dict) else ""
            if not isinstance(url, str) or not url:
                raise jwt.PyJWKClientError(f"{discovery} names no jwks_uri")
        return jwt.PyJWKClient(
            url, cache_keys=True, lifespan=300, timeout=int(max(1, self.settings.timeout_s))
        )

    def _signing_key(self, token: str) -> jwt.PyJWK:
        if self._client is None:
            self._client = self._jwks_client()
        return self._client.get_signing_key_from_jwt(token)

    async def verify(self, token: str) -> ApiKeyRecord:
        """The record of the scopes ``token`` grants.

        Raises:
            InvalidToken: 401 when the token is malformed, badly signed, expired, or for another
                issuer or audience; 403 when it grants no Loom scope; 503 when the provider's keys
                cannot be fetched.
        """
        if len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken("the bearer token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"not an API key nor a valid JWT ({exc})") from exc
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken(f"tokens signed with {header.get('alg')!r} are not accepted")
        try:
            key = await asyncio.wait_for(
                asyncio.to_thread(self._signing_key, token), self.settings.timeout_s * 2
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise InvalidToken(
                f"the identity provider's keys cannot be fetched now ({exc}); retry", 503
            ) from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise InvalidToken(f"the token's signing key is unknown ({exc})") from exc
        except (OSError, TimeoutError, ValueError) as exc:
            raise InvalidToken(f"the identity provider cannot be reached now ({exc!r}); retry", 503) from exc
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc
        scopes = _scopes(claims.get(self.settings.scopes_claim))
        if not scopes:
            raise InvalidToken(
                f"the token grants none of Loom's scopes (claim {self.settings.scopes_claim!r})", 403
            )
        subject = str(claims["sub"])
        digest = hashlib.sha256(f"{claims['iss']}\n{subject}".encode("utf-8", "surrogatepass")).hexdigest()
        name = "".join(c if c.isalnum() or c in "_.:@/+=-" else "_" for c in subject)[:200] or "subject"
        return ApiKeyRecord(id=digest[:16], name=f"oidc:{name}", scopes=scopes, hint="jwt")


def oidc_verifier(settings: ServiceSettings) -> OidcVerifier | None:
    """The verifier a service's settings ask for (``LOOM_OIDC_ISSUER`` set), or None."""
    if not settings.oidc_issuer:
        return None
    return OidcVerifier(
        OidcSettings(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            scopes_claim=settings.oidc_scopes_claim,
        )
    )
