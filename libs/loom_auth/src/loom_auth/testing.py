"""An identity provider for tests: an RSA key, its JWKS and discovery document served over real
HTTP on a loopback port, and tokens it signs. Not for production: it signs whatever it is asked."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = ["TestProvider", "serve_provider"]


class TestProvider:
    """An issuer at ``issuer`` (``/.well-known/openid-configuration`` and ``/jwks``) with one
    signing key, ``kid``."""

    __test__ = False  # not a pytest test class

    def __init__(self, issuer: str, kid: str = "k1") -> None:
        self.issuer = issuer
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_fetches = 0

    def jwks(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(self, scope: str | list[str] = "read", *, audience: str = "loom", **claims: Any) -> str:
        """A token of this issuer for ``audience`` granting ``scope``; ``claims`` override any
        claim (``exp=…`` for an expired one, ``iss=…`` for another issuer)."""
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": audience,
            "sub": "user-" + uuid.uuid4().hex[:8],
            "iat": now,
            "exp": now + 300,
            "scope": scope,
            **claims,
        }
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": self.kid})


@contextmanager
def serve_provider() -> Iterator[TestProvider]:
    """A :class:`TestProvider` served on a free loopback port until the block ends."""
    holder: dict[str, TestProvider] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            provider = holder["provider"]
            if self.path == "/.well-known/openid-configuration":
                body: dict[str, Any] = {"issuer": provider.issuer, "jwks_uri": provider.issuer + "/jwks"}
            elif self.path == "/jwks":
                provider.jwks_fetches += 1
                body = provider.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["provider"] = TestProvider(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, name="test-oidc-provider", daemon=True)
    thread.start()
    try:
        yield holder["provider"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
