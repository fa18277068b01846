"""Loom's identity-provider tokens: :class:`~loom_auth.oidc.OidcVerifier` checks the JWTs an
OpenID Connect provider issues, for the services' :class:`~loom_protocol.auth.ApiKeyMiddleware`."""

from loom_auth.oidc import OidcSettings, OidcVerifier, oidc_verifier

__all__ = ["OidcSettings", "OidcVerifier", "oidc_verifier"]
