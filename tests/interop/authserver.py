"""A real OAuth authorization server for the tests: npm ``oidc-provider`` on 127.0.0.1.

    with running_authorization_server(tmp_path, resources=[resource], scopes=["tools:read"],
                                      clients=[{"client_id": "agent-42", "client_secret": "s3cret"}]) as auth:
        token = auth.token("agent-42", "s3cret", resource=resource, scope="tools:read")

Its issuer is ``http://127.0.0.1:PORT`` (the enforcer accepts loopback http for JWKS and
discovery). Client credentials with RFC 8707 ``resource=`` one of ``resources`` gives an RFC 9068
JWT access token: ``typ: at+jwt``, ES256, ``aud`` = that resource, ``client_id``, ``sub`` =
``client_id``, ``scope`` only when asked for. Clients authenticate with ``client_secret_basic``
unless they name another ``token_endpoint_auth_method`` (``private_key_jwt`` with ``jwks``).

Every client may also use RFC 8693 token exchange (``exchange_response``): an access token of this
server for a JWT for another of ``resources``, with ``act: {sub: <client>}``; a client configured with
``exchange_widen_scope: true`` is granted every scope instead of those asked for, and one with
``exchange_hide_scope: true`` gets an answer without ``scope``. ``exchanges()`` lists the exchanges
made so far (client, resource, scope, jti; never a token).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx

from tests.interop.nodetools import NODE_DIR, NodeProcess, running_node

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@dataclass
class AuthorizationServer:
    issuer: str
    process: NodeProcess | None = None

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Its RFC 8414 document."""
        response = httpx.get(f"{self.issuer}/.well-known/oauth-authorization-server", timeout=10)
        response.raise_for_status()
        return response.json()

    @property
    def jwks_uri(self) -> str:
        return self.metadata["jwks_uri"]

    @property
    def token_endpoint(self) -> str:
        return self.metadata["token_endpoint"]

    def token_response(self, client_id: str, secret: str, *, resource: str | None = None,
                       scope: str | None = None) -> httpx.Response:
        form = {"grant_type": "client_credentials"}
        if resource is not None:
            form["resource"] = resource
        if scope is not None:
            form["scope"] = scope
        return httpx.post(self.token_endpoint, data=form, auth=(client_id, secret), timeout=10)

    def token(self, client_id: str, secret: str, *, resource: str | None = None, scope: str | None = None) -> str:
        """An access token by client credentials; fails the test when the server refuses."""
        response = self.token_response(client_id, secret, resource=resource, scope=scope)
        assert response.status_code == 200, f"token request refused: {response.status_code} {response.text}"
        return response.json()["access_token"]

    def exchange_response(self, client_id: str, secret: str, subject_token: str, *, resource: str | None = None,
                          audience: str | None = None, scope: str | None = None) -> httpx.Response:
        """An RFC 8693 token exchange, the client authenticated with ``client_secret_basic``."""
        form = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token, "subject_token_type": ACCESS_TOKEN_TYPE}
        for name, value in (("resource", resource), ("audience", audience), ("scope", scope)):
            if value is not None:
                form[name] = value
        return httpx.post(self.token_endpoint, data=form, auth=(client_id, secret), timeout=10)

    def exchanges(self) -> list[dict[str, Any]]:
        """The token exchanges this server answered so far, oldest first."""
        assert self.process is not None
        lines = [json.loads(line) for line in list(self.process.lines)[1:] if line.startswith("{")]
        return [line["token_exchange"] for line in lines if "token_exchange" in line]


@contextmanager
def running_authorization_server(log_dir: Path, *, resources: list[str], clients: list[dict[str, Any]],
                                 scopes: list[str], access_token_ttl: int = 600,
                                 exchange_token_ttl: int | None = None) -> Iterator[AuthorizationServer]:
    """Start ``node/authserver.mjs``; it is stopped (and its process group killed) on exit.
    Its stderr goes to ``log_dir/authserver.log``."""
    config = {"resources": resources, "clients": clients, "scopes": scopes, "access_token_ttl": access_token_ttl,
              "exchange_token_ttl": exchange_token_ttl or access_token_ttl}
    with running_node([str(NODE_DIR / "authserver.mjs")], stdin=json.dumps(config) + "\n",
                      log=log_dir / "authserver.log") as process:
        ready = json.loads(process.first_line())
        yield AuthorizationServer(ready["issuer"], process)
