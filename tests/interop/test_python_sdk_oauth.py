"""The official Python MCP SDK's own OAuth client through the enforcer, against a real
authorization server (npm oidc-provider, ``tests.interop.authserver``).

``ClientCredentialsOAuthProvider`` (``mcp.client.auth.extensions.client_credentials``) is an
httpx2 ``Auth``: the first MCP request is answered 401 with ``resource_metadata=``; the SDK reads
the enforcer's RFC 9728 document (whose ``resource`` must be the URL it dialled), then the
authorization server's RFC 8414 metadata, asks for a token by client credentials with
``resource=`` and the scopes the document lists, and sends the request again. A 403
``insufficient_scope`` whose challenge names ``scope=`` makes it ask for a token with more scopes
(step-up); a 403 ``access_denied`` does not.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import anyio
import pytest
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from mcp.shared.exceptions import MCPError

from tests.interop.authserver import AuthorizationServer, running_authorization_server
from tests.interop.conftest import MODES, Stack, Wire, connect, mcp_policy, start_enforcer
from tests.support import ServerThread, free_port

CLIENT_ID = "agent-42"
SECRET = "agent-42-secret"
SCOPES = ["tools:read", "tools:call"]

#: the rules of the step-up resource: listing needs tools:read, calling echo tools:call
STEP_UP_RULES = """
      - id: plumbing
        effect: allow
        scopes: [tools:read]
        mcp: {methods: ["initialize", "notifications/*", "ping", "server/discover", "tools/list"]}
      - id: agent-calls-echo
        effect: allow
        client_ids: [agent-42]
        scopes: [tools:call]
        mcp: {tools: ["echo"]}
      - id: streams-and-close
        effect: allow
        methods: [GET, DELETE]
"""


class MemoryStorage:
    """The SDK's ``TokenStorage``, kept in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def claims_of(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@dataclass
class OAuthWorld:
    auth: AuthorizationServer
    enforcer: ServerThread  # the rules of the other suites (MCP_RULES), tools:read and tools:call supported
    step_up: ServerThread  # STEP_UP_RULES, only tools:read advertised

    def provider(self, enforcer: ServerThread, storage: MemoryStorage) -> ClientCredentialsOAuthProvider:
        return ClientCredentialsOAuthProvider(server_url=f"{enforcer.url}/mcp", storage=storage, client_id=CLIENT_ID,
                                              client_secret=SECRET, issuer=self.auth.issuer)


def issuer_block(auth: AuthorizationServer) -> str:
    return f"""  - id: corp
    issuer: {auth.issuer}
    discovery: true
    algorithms: [ES256]
"""


@pytest.fixture(scope="module")
def oauth(mcp_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthWorld]:
    first = free_port()
    ports = first, next(port for port in iter(free_port, None) if port != first)
    upstream = mcp_stack.upstream.url
    resources = [f"http://127.0.0.1:{port}/mcp" for port in ports]
    client = {"client_id": CLIENT_ID, "client_secret": SECRET, "scope": " ".join(SCOPES)}
    with running_authorization_server(tmp_path_factory.mktemp("authserver"), resources=resources,
                                      clients=[client], scopes=SCOPES) as auth, ExitStack() as running:
        enforcer = start_enforcer(tmp_path_factory.mktemp("oauth-policy"), lambda origin: mcp_policy(
            origin=origin, upstream=upstream, issuer_block=issuer_block(auth),
            resource_extra="    scopes_supported: [tools:read, tools:call]\n"), port=ports[0])
        running.callback(enforcer.stop)
        step_up = start_enforcer(tmp_path_factory.mktemp("step-up-policy"), lambda origin: mcp_policy(
            origin=origin, upstream=upstream, issuer_block=issuer_block(auth),
            resource_extra="    scopes_supported: [tools:read]\n", rules=STEP_UP_RULES), port=ports[1])
        running.callback(step_up.stop)
        yield OAuthWorld(auth, enforcer, step_up)


def token_requests(wire: Wire, auth: AuthorizationServer) -> list[dict[str, list[str]]]:
    """The forms of the token requests the SDK sent, in order."""
    return [parse_qs(e.request_body.decode()) for e in wire.exchanges if e.url == auth.token_endpoint]


@pytest.mark.parametrize(("mode", "version"), MODES)
def test_discovery_token_and_retry_then_calls_work(oauth: OAuthWorld, world: Stack, mode: str, version: str) -> None:
    wire, storage = Wire(), MemoryStorage()
    mcp_url = f"{oauth.enforcer.url}/mcp"

    async def scenario() -> None:
        async with connect(mcp_url, mode=mode, wire=wire, auth=oauth.provider(oauth.enforcer, storage)) as client:
            assert client.protocol_version == version
            assert [t.name for t in (await client.list_tools()).tools] == ["echo", "search_docs"]
            assert (await client.call_tool("echo", {"text": "via oauth"})).content[0].text == "via oauth"  # type: ignore[union-attr]
            with pytest.raises(MCPError):
                await client.call_tool("delete_all", {})

    anyio.run(scenario)
    steps = [(e.method, e.url, e.status) for e in wire.exchanges]
    assert steps[:5] == [
        ("POST", mcp_url, 401),
        ("GET", f"{oauth.enforcer.url}/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", f"{oauth.auth.issuer}/.well-known/oauth-authorization-server", 200),
        ("POST", oauth.auth.token_endpoint, 200),
        ("POST", mcp_url, 200),
    ]
    challenge = wire.exchanges[0].headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{oauth.enforcer.url}/.well-known/oauth-protected-resource/mcp"' in challenge
    # one token, asked for with resource= and the scopes of the metadata; the 403 of a denied call
    # (access_denied, not insufficient_scope) does not send the client back to the server
    [form] = token_requests(wire, oauth.auth)
    assert form["grant_type"] == ["client_credentials"]
    assert form["resource"] == [mcp_url]
    assert form["scope"] == ["tools:read tools:call"]
    assert storage.tokens is not None
    token = claims_of(storage.tokens.access_token)
    assert (token["iss"], token["aud"], token["client_id"]) == (oauth.auth.issuer, mcp_url, CLIENT_ID)
    assert [e.status for e in wire.exchanges if e.status == 403] == [403]
    assert world.upstream.ran == ["echo"]
    forwarded = [s for s in world.upstream.record.seen if s.method == "POST"]
    assert forwarded and {(s.headers.get("x-enforcer-client-id"), s.headers.get("x-enforcer-sub"))
                          for s in forwarded} == {(CLIENT_ID, CLIENT_ID)}
    assert not any("authorization" in s.headers for s in world.upstream.record.seen)


def test_insufficient_scope_steps_the_token_up(oauth: OAuthWorld, world: Stack) -> None:
    wire, storage = Wire(), MemoryStorage()
    mcp_url = f"{oauth.step_up.url}/mcp"

    async def scenario() -> None:
        async with connect(mcp_url, wire=wire, auth=oauth.provider(oauth.step_up, storage)) as client:
            assert (await client.call_tool("echo", {"text": "stepped up"})).content[0].text == "stepped up"  # type: ignore[union-attr]
            assert [t.name for t in (await client.list_tools()).tools] == ["echo"]

    anyio.run(scenario)
    [challenge] = [e for e in wire.exchanges if e.status == 403]
    assert challenge.body["error"] == "insufficient_scope"
    www_authenticate = challenge.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in www_authenticate
    assert 'scope="tools:call"' in www_authenticate
    assert f'resource_metadata="{oauth.step_up.url}/.well-known/oauth-protected-resource/mcp"' in www_authenticate
    first, second = token_requests(wire, oauth.auth)
    assert first["scope"] == ["tools:read"]
    assert second["scope"] == ["tools:read tools:call"]
    assert second["resource"] == [mcp_url]
    assert storage.tokens is not None
    assert claims_of(storage.tokens.access_token)["scope"] == "tools:read tools:call"
    assert world.upstream.ran == ["echo"]
