"""The enforcer against tokens from a real authorization server (npm oidc-provider).

Client credentials with RFC 8707 ``resource=`` yields an RFC 9068 JWT; the enforcer finds the
server's keys by RFC 8414 discovery from its issuer URL, accepts a token for its resource and
refuses one for another resource, one without ``resource`` (opaque) and one from a server it
does not trust.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.authserver import AuthorizationServer, running_authorization_server
from tests.support import RESOURCE, RecordingUpstream, serve_enforcer, serving

OTHER_RESOURCE = "https://other.example.test/api"
CLIENT = {"client_id": "agent-42", "client_secret": "agent-42-secret", "scope": "tools:read tools:call"}


def jose_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def policy(issuer: str, upstream: str) -> str:
    return f"""version: 1
issuers:
  - id: as
    issuer: {issuer}
    discovery: true
    algorithms: [ES256]
resources:
  - id: api
    resource: {RESOURCE}
    match: {{path_prefix: /mcp}}
    upstream: {upstream}/mcp
    issuers: [as]
    scopes_supported: [tools:read, tools:call]
    rules:
      - id: agents-read
        effect: allow
        client_ids: [agent-42]
        scopes: [tools:read]
"""


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthorizationServer]:
    with running_authorization_server(tmp_path_factory.mktemp("authserver"), resources=[RESOURCE, OTHER_RESOURCE],
                                      clients=[CLIENT], scopes=["tools:read", "tools:call"]) as server:
        yield server


def test_client_credentials_with_resource_is_an_rfc9068_jwt(auth: AuthorizationServer) -> None:
    token = auth.token("agent-42", "agent-42-secret", resource=RESOURCE, scope="tools:read")
    header, claims = jose_part(token, 0), jose_part(token, 1)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"] in {key["kid"] for key in httpx.get(auth.jwks_uri, timeout=10).json()["keys"]}
    assert claims["iss"] == auth.issuer
    assert claims["aud"] == RESOURCE
    assert claims["client_id"] == claims["sub"] == "agent-42"
    assert claims["scope"] == "tools:read"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["jti"]


def test_unknown_resource_is_refused(auth: AuthorizationServer) -> None:
    response = auth.token_response("agent-42", "agent-42-secret", resource="https://unknown.example.test/")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_target"


def test_enforcer_accepts_its_own_tokens_and_refuses_others(auth: AuthorizationServer, tmp_path: Path) -> None:
    upstream = RecordingUpstream()
    with serving(upstream) as upstream_server, \
            serve_enforcer(tmp_path, policy(auth.issuer, upstream_server.url)) as (_, enforcer), \
            httpx.Client(base_url=enforcer.url, timeout=10) as client:

        def call(token: str) -> httpx.Response:
            return client.get("/mcp/tools", headers={"authorization": f"Bearer {token}"})

        good = call(auth.token("agent-42", "agent-42-secret", resource=RESOURCE, scope="tools:read"))
        assert good.status_code == 200, good.text
        assert [(r.path, r.header("x-enforcer-client-id"), r.header("x-enforcer-scope"))
                for r in upstream.requests] == [("/mcp/tools", "agent-42", "tools:read")]
        assert upstream.requests[0].header("authorization") is None

        elsewhere = call(auth.token("agent-42", "agent-42-secret", resource=OTHER_RESOURCE, scope="tools:read"))
        assert elsewhere.status_code == 401
        assert elsewhere.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in elsewhere.headers["www-authenticate"]

        opaque = call(auth.token("agent-42", "agent-42-secret", scope="tools:read"))
        assert opaque.status_code == 401
        assert opaque.json()["error"] == "invalid_token"

        no_scope = call(auth.token("agent-42", "agent-42-secret", resource=RESOURCE))
        assert no_scope.status_code == 403
        assert no_scope.json()["error"] == "insufficient_scope"

        assert len(upstream.requests) == 1


def test_enforcer_refuses_a_server_it_does_not_trust(auth: AuthorizationServer, tmp_path: Path) -> None:
    """Same claims, same resource, but signed by another oidc-provider instance (its own key)."""
    upstream = RecordingUpstream()
    with running_authorization_server(tmp_path, resources=[RESOURCE], clients=[CLIENT],
                                      scopes=["tools:read", "tools:call"]) as stranger, \
            serving(upstream) as upstream_server, \
            serve_enforcer(tmp_path, policy(auth.issuer, upstream_server.url)) as (_, enforcer):
        token = stranger.token("agent-42", "agent-42-secret", resource=RESOURCE, scope="tools:read")
        response = httpx.get(f"{enforcer.url}/mcp/tools", headers={"authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 401
        assert upstream.requests == []
