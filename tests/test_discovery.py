"""Issuer keys found by discovery: RFC 8414 first, then OpenID discovery (real HTTP servers)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from enforcer.auth.jwks import KeyCache
from enforcer.auth.keysources import DiscoveryKeySource
from enforcer.clock import SystemClock
from enforcer.policy.model import Issuer
from tests.support import SigningKey, free_port, jwks, serving


class AuthorizationServer:
    """Serves metadata documents at the paths given, and a JWKS at /jwks."""

    def __init__(self, port: int, documents: dict[str, dict[str, Any]], key: SigningKey) -> None:
        self.port, self.documents, self.key = port, documents, key
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["path"])
        if scope["path"] == "/jwks":
            status, body = 200, jwks(self.key)
        elif scope["path"] in self.documents:
            status, body = 200, self.documents[scope["path"]]
        else:
            status, body = 404, {"error": "not_found"}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def _load(issuer_url: str) -> KeyCache:
    async with httpx.AsyncClient() as client:
        issuer = Issuer(id="as", issuer=issuer_url, discovery=True, algorithms=("ES256",))
        keys = KeyCache(issuer, DiscoveryKeySource(issuer_url, client), SystemClock())
        await keys.refresh("test")
        return keys


@pytest.mark.parametrize(
    ("name", "issuer_path", "served_at", "metadata_issuer", "ready"),
    [
        ("rfc8414-root", "", "/.well-known/oauth-authorization-server", None, True),
        ("rfc8414-path-insertion", "/tenant", "/.well-known/oauth-authorization-server/tenant", None, True),
        ("openid-fallback", "/tenant", "/tenant/.well-known/openid-configuration", None, True),
        ("issuer-mismatch-refused", "", "/.well-known/oauth-authorization-server", "http://127.0.0.1:1", False),
        ("no-metadata-at-all", "", "/elsewhere", None, False),
    ],
)
def test_discovery_finds_keys_only_from_matching_metadata(name, issuer_path, served_at, metadata_issuer, ready):
    port = free_port()
    issuer_url = f"http://127.0.0.1:{port}{issuer_path}"
    key = SigningKey.generate("ES256", kid="d1")
    document = {"issuer": metadata_issuer or issuer_url, "jwks_uri": f"http://127.0.0.1:{port}/jwks"}
    server = AuthorizationServer(port, {served_at: document}, key)
    with serving(server, port=port):
        keys = asyncio.run(_load(issuer_url))
    assert keys.ready is ready
    if ready:
        assert keys.get("d1") is not None and keys.get("d1").alg == "ES256"
        assert "/jwks" in server.paths
    else:
        assert keys.last_error is not None and "discovery failed" in keys.last_error
        assert "/jwks" not in server.paths  # never fetched keys named by unmatched metadata


def test_discovery_refuses_non_https_jwks_uri_for_remote_host():
    port = free_port()
    issuer_url = f"http://127.0.0.1:{port}"
    document = {"issuer": issuer_url, "jwks_uri": "http://keys.example.test/jwks"}
    server = AuthorizationServer(port, {"/.well-known/oauth-authorization-server": document},
                                 SigningKey.generate("ES256"))
    with serving(server, port=port):
        keys = asyncio.run(_load(issuer_url))
    assert not keys.ready
    assert "not https" in (keys.last_error or "")
