"""OidcVerifier against a real HTTP identity provider (loom_auth.testing): what it accepts, what it
refuses and with which status, and a provider that cannot be reached."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from loom_auth.oidc import OidcSettings, OidcVerifier
from loom_auth.testing import TestProvider, serve_provider
from loom_protocol.auth import InvalidToken, Scope


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    with serve_provider() as p:
        yield p


def verifier(provider: TestProvider, **overrides: object) -> OidcVerifier:
    return OidcVerifier(OidcSettings(issuer=provider.issuer, audience="loom", **overrides))  # type: ignore[arg-type]


def _hs256(header: dict[str, object], claims: dict[str, object], secret: bytes) -> str:
    """A JWT signed with HMAC-SHA256 by hand (PyJWT refuses to use a public key as the secret)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = part(json.dumps(header).encode()) + "." + part(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(signature)


async def refused(v: OidcVerifier, token: str, status: int = 401) -> str:
    with pytest.raises(InvalidToken) as caught:
        await v.verify(token)
    assert caught.value.status == status, str(caught.value)
    return str(caught.value)


async def test_a_valid_token_grants_its_loom_scopes_found_by_discovery(provider: TestProvider) -> None:
    v = verifier(provider)
    record = await v.verify(provider.token("openid loom:submit read profile"))
    assert record.scopes == [Scope.READ, Scope.SUBMIT]
    assert record.allows(Scope.READ) and not record.allows(Scope.ADMIN)
    assert record.name.startswith("oidc:user-")
    listed = await v.verify(provider.token(["admin"]))
    assert listed.allows(Scope.APPROVE)
    assert provider.jwks_fetches == 1  # the keys are cached


async def test_bad_tokens_are_refused_with_401(provider: TestProvider) -> None:
    v = verifier(provider)
    now = int(time.time())
    await refused(v, provider.token(exp=now - 120))  # expired beyond the leeway
    await refused(v, provider.token(audience="someone-else"))
    await refused(v, provider.token(iss="http://evil.example"))
    await refused(v, "not-a-jwt")
    await refused(v, provider.token() + "x")  # signature altered
    unsigned = jwt.encode(
        {"iss": provider.issuer, "aud": "loom", "sub": "x", "exp": now + 60}, None, algorithm="none"
    )
    assert "none" in await refused(v, unsigned)
    # the provider's public key used as an HMAC secret (algorithm confusion)
    pem = provider.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = _hs256(
        {"alg": "HS256", "typ": "JWT", "kid": provider.kid},
        {"iss": provider.issuer, "aud": "loom", "sub": "x", "exp": now + 60, "scope": "admin"},
        pem,
    )
    await refused(v, confused)
    # the same kid, signed by another key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        {"iss": provider.issuer, "aud": "loom", "sub": "x", "exp": now + 60, "scope": "admin"},
        other,
        algorithm="RS256",
        headers={"kid": provider.kid},
    )
    await refused(v, forged)
    await refused(v, "a" * 20_000)


async def test_a_token_without_loom_scopes_is_403(provider: TestProvider) -> None:
    assert "scope" in await refused(verifier(provider), provider.token("openid profile"), 403)


async def test_an_unreachable_provider_is_503_within_the_timeout(provider: TestProvider) -> None:
    v = OidcVerifier(OidcSettings(issuer="http://127.0.0.1:9", audience="loom", timeout_s=1))
    started = time.monotonic()
    await refused(v, provider.token(), 503)
    assert time.monotonic() - started < 5
