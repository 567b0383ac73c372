"""The official TypeScript MCP client, through the enforcer, with a real authorization server.

``node/ts_client.mjs`` runs npm ``@modelcontextprotocol/sdk``'s ``StreamableHTTPClientTransport``
with its ``ClientCredentialsProvider``, knowing only the enforcer's URL, its client credentials
and the issuer it expects. Its first request meets the enforcer's 401; from the challenge it
finds the enforcer's RFC 9728 document, from that the authorization server (npm
``oidc-provider``) and its RFC 8414 metadata, gets an RFC 9068 token for the enforcer's resource
by client credentials, and retries. Then it lists the tools, calls an allowed one and a denied
one on a real MCP server (the Python SDK) behind the enforcer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp.server.mcpserver import MCPServer

from enforcer.app import EnforcerApp
from enforcer.policy.loader import load_policy
from tests.interop.authserver import AuthorizationServer, running_authorization_server
from tests.interop.nodetools import NODE_DIR, running_node
from tests.support import ServerThread, free_port, serving

CLIENT = {"client_id": "agent-42", "client_secret": "agent-42-secret", "scope": "tools:read tools:call"}
SCOPES = ["tools:read", "tools:call"]


@dataclass
class Ran:
    """The tools the upstream actually ran, in order (written by the server thread)."""

    names: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str) -> None:
        with self.lock:
            self.names.append(name)


def upstream_app(ran: Ran) -> Any:
    server = MCPServer("interop-ts-upstream", version="1.0.0", log_level="WARNING")

    @server.tool(description="Return the text unchanged.")
    def echo(text: str) -> str:
        ran.add("echo")
        return text

    @server.tool(description="Delete every document.")
    def delete_all() -> str:
        ran.add("delete_all")
        return "everything is gone"

    return server.streamable_http_app()


def policy(*, resource: str, upstream: str, issuer: str) -> str:
    return f"""version: 1
issuers:
  - id: oidc-provider
    issuer: {issuer}
    discovery: true
    algorithms: [ES256]
resources:
  - id: tools
    resource: {resource}
    match: {{path_prefix: /mcp}}
    upstream: {upstream}/mcp
    issuers: [oidc-provider]
    scopes_supported: [tools:read, tools:call]
    mcp: true
    rules:
      - id: no-deletes
        effect: deny
        mcp: {{tools: ["delete_*"]}}
      - id: plumbing
        effect: allow
        scopes: [tools:read]
        mcp: {{methods: ["initialize", "notifications/*", "ping", "tools/list"]}}
      - id: agent-calls-echo
        effect: allow
        client_ids: [agent-42]
        scopes: [tools:call]
        mcp: {{methods: ["tools/call"], tools: ["echo", "delete_*"]}}
      - id: streams-and-close
        effect: allow
        methods: [GET, DELETE]
"""


@dataclass
class World:
    auth: AuthorizationServer
    url: str  # the MCP endpoint at the enforcer
    ran: Ran
    logs: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    logs = tmp_path_factory.mktemp("ts-client")
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    ran = Ran()
    with running_authorization_server(logs, resources=[resource], clients=[CLIENT], scopes=SCOPES) as auth, \
            serving(upstream_app(ran), lifespan="on") as upstream:
        path = logs / "policy.yaml"
        path.write_text(policy(resource=resource, upstream=upstream.url, issuer=auth.issuer))
        enforcer = ServerThread(EnforcerApp(load_policy([path])), port=port, lifespan="on").start()
        try:
            yield World(auth, resource, ran, logs)
        finally:
            enforcer.stop()


def run_ts_client(world: World, calls: list[dict[str, Any]]) -> dict[str, Any]:
    task = {"url": world.url, "issuer": world.auth.issuer, "client_id": CLIENT["client_id"],
            "client_secret": CLIENT["client_secret"], "scope": "tools:read tools:call", "calls": calls}
    with running_node([str(NODE_DIR / "ts_client.mjs")], stdin=json.dumps(task) + "\n",
                      log=world.logs / "ts_client.log") as client:
        report = json.loads(client.first_line(timeout=60))
        client.proc.wait(timeout=10)
    assert "error" not in report, \
        f"{report['error']}\n{json.dumps(report['exchanges'], indent=1)}\nstderr:\n{client.stderr()}"
    return report


def test_ts_client_authorizes_through_the_enforcer_and_calls_tools(world: World) -> None:
    report = run_ts_client(world, [{"name": "echo", "arguments": {"text": "hello from TypeScript"}},
                                   {"name": "delete_all", "arguments": {}}])
    origin = world.url.removesuffix("/mcp")
    exchanges = [(e["method"], e["url"], e["status"]) for e in report["exchanges"]]
    # 401 -> RFC 9728 document at the enforcer -> RFC 8414 metadata -> token -> the same request again
    assert exchanges[:5] == [
        ("POST", world.url, 401),
        ("GET", f"{origin}/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", f"{world.auth.issuer}/.well-known/oauth-authorization-server", 200),
        ("POST", world.auth.token_endpoint, 200),
        ("POST", world.url, 200),
    ], exchanges
    challenge = report["exchanges"][0]["www_authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{origin}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert "error=" not in challenge  # no token was sent, so no error (RFC 6750 section 3.1)
    token_request = report["exchanges"][3]["form"]
    assert token_request == {"grant_type": "client_credentials", "resource": world.url,
                             "scope": "tools:read tools:call"}
    # the handshake-era session the TypeScript client speaks, carried through the enforcer:
    # initialize, notifications/initialized, the GET event stream (opened in the background, so
    # in no fixed place), tools/list, the two calls, DELETE
    assert report["session"]
    assert report["protocol_version"] == "2025-11-25"
    assert sorted((e["method"], e["status"]) for e in report["exchanges"][5:]) == sorted([
        ("POST", 202), ("GET", 200), ("POST", 200), ("POST", 200), ("POST", 403), ("DELETE", 200)])
    assert all(e["url"] == world.url for e in report["exchanges"][5:])
    # tools/list shows only what agent-42 may call
    assert report["tools"] == ["echo"]
    echo, delete = report["calls"]
    assert echo["result"]["content"] == [{"type": "text", "text": "hello from TypeScript"}], echo
    assert not echo["result"].get("isError"), echo
    # the denied call: 403 from the enforcer, naming the rule, and the upstream never ran it
    assert delete["code"] == 403, delete
    body = json.loads(delete["error"][delete["error"].index("{"):])  # the SDK quotes the body in its message
    assert (body["error"], body["reason"], body["rule"]) == ("access_denied", "denied_by_rule", "no-deletes")
    refused = [e for e in report["exchanges"] if e["status"] == 403]
    assert [(e["method"], e["url"]) for e in refused] == [("POST", world.url)]
    assert world.ran.names == ["echo"]
    # every MCP request after the first carried the token: one 401 in all, one token request
    assert [e["status"] for e in report["exchanges"]].count(401) == 1
    assert sum(e["url"] == world.auth.token_endpoint for e in report["exchanges"]) == 1
