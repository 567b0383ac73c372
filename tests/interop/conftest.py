"""Fixtures for the interop suites: the enforcer in front of a real MCP SDK server, on 127.0.0.1.

``mcp_stack`` runs, once per package, a JWKS endpoint for a test issuer, the SDK upstream of
``mcp_upstream`` and an ``EnforcerApp`` with two MCP resources: ``/mcp`` (streamable HTTP) and
``/legacy-mcp`` (the HTTP+SSE transport, whose upstream path is ``/legacy``, so the ``endpoint``
event must be rewritten). ``world`` hands it to one test with the upstream's record cleared.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from enforcer.app import EnforcerApp
from enforcer.policy.loader import load_policy
from tests.interop.mcp_upstream import Upstream, running_upstream
from tests.support import ISSUER, JWKSEndpoint, ServerThread, SigningKey, claims, free_port, jwks, serving, sign


@dataclass(frozen=True)
class Principal:
    sub: str
    client_id: str


#: agent-42 acting for alice may call echo and search_*; agent-7 acting for bob may call nothing
ALICE = Principal("alice", "agent-42")
BOB = Principal("bob", "agent-7")

#: the rules of both MCP resources (YAML, indented for ``resources[].rules``)
MCP_RULES = """
      - id: no-deletes
        effect: deny
        mcp: {tools: ["delete_*"]}
      - id: plumbing
        effect: allow
        mcp:
          methods: ["initialize", "notifications/*", "ping", "server/discover",
                    "tools/list", "prompts/list", "resources/list"]
      - id: agent-calls-search
        effect: allow
        client_ids: [agent-42]
        mcp: {methods: ["tools/call"], tools: ["echo", "search_*"]}
      - id: agent-gets-summaries
        effect: allow
        client_ids: [agent-42]
        mcp: {prompts: ["summarize"]}
      - id: agent-reads-docs
        effect: allow
        client_ids: [agent-42]
        mcp: {resources: ["docs://*"]}
      - id: streams-and-close
        effect: allow
        methods: [GET, DELETE]
"""


def mcp_policy(*, origin: str, upstream: str, issuer_block: str, resource_extra: str = "",
               rules: str = MCP_RULES) -> str:
    """The policy: two ``mcp: true`` resources at ``origin`` (the enforcer's own URL) in front of
    the SDK upstream, trusting the issuer ``issuer_block`` (YAML, id ``corp``); ``resource_extra``
    holds more keys of each resource, indented 4 spaces."""
    resources = []
    for rid, prefix, upstream_path in (("tools", "/mcp", "/mcp"), ("legacy", "/legacy-mcp", "/legacy")):
        resources.append(f"""  - id: {rid}
    resource: {origin}{prefix}
    match: {{path_prefix: {prefix}}}
    upstream: {upstream}{upstream_path}
    issuers: [corp]
    mcp: true
{resource_extra}    rules:{rules}""")
    return "version: 1\nissuers:\n" + issuer_block + "resources:\n" + "\n".join(resources)


@dataclass
class Stack:
    """The running pieces; ``url`` is the enforcer's origin."""

    upstream: Upstream
    enforcer: ServerThread
    key: SigningKey
    jwks_url: str  # the test issuer's keys, for more enforcers in front of the same upstream

    @property
    def url(self) -> str:
        return self.enforcer.url

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    @property
    def legacy_sse_url(self) -> str:
        return f"{self.url}/legacy-mcp/sse"

    def token(self, who: Principal, resource: str | None = None) -> str:
        return sign(self.key, claims(sub=who.sub, client_id=who.client_id, aud=resource or self.mcp_url))

    def auth(self, who: Principal, resource: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(who, resource)}"}


def issuer_block(jwks_url: str) -> str:
    return f"""  - id: corp
    issuer: {ISSUER}
    jwks_uri: {jwks_url}
    algorithms: [ES256]
"""


def start_enforcer(directory: Path, policy_for: Callable[[str], str], port: int | None = None) -> ServerThread:
    """An ``EnforcerApp`` on ``port`` (a free one by default), chosen before the policy is written
    so that ``policy_for(origin)`` can name the enforcer's own URL."""
    port = port or free_port()
    path = directory / "policy.yaml"
    path.write_text(policy_for(f"http://127.0.0.1:{port}"))
    return ServerThread(EnforcerApp(load_policy([path])), port=port, lifespan="on").start()


@pytest.fixture(scope="package")
def mcp_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    key = SigningKey.generate("ES256", kid="interop")
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, running_upstream() as upstream:
        enforcer = start_enforcer(tmp_path_factory.mktemp("interop-policy"), lambda origin: mcp_policy(
            origin=origin, upstream=upstream.url, issuer_block=issuer_block(f"{issuer.url}/jwks")))
        try:
            yield Stack(upstream, enforcer, key, f"{issuer.url}/jwks")
        finally:
            enforcer.stop()


@pytest.fixture
def world(mcp_stack: Stack) -> Stack:
    """``mcp_stack`` with nothing recorded yet."""
    mcp_stack.upstream.record.clear()
    return mcp_stack


@pytest.fixture
def http(mcp_stack: Stack) -> Iterator[httpx.Client]:
    """A plain HTTP client for the enforcer, for requests the SDK would never send."""
    with httpx.Client(base_url=mcp_stack.url, timeout=10) as client:
        yield client


# -- watching what an SDK client receives -----------------------------------------------


@dataclass
class Exchange:
    method: str
    url: str
    status: int
    headers: dict[str, str]
    body: Any = None  # the parsed JSON body of a non-streamed JSON answer
    request_body: bytes = b""


@dataclass
class Wire:
    """The HTTP answers an SDK client got, seen through httpx2 event hooks (the SDK itself
    turns an HTTP error into a generic JSON-RPC error and keeps the body to itself)."""

    exchanges: list[Exchange] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        body = None
        if response.headers.get("content-type", "").startswith("application/json"):
            await response.aread()
            try:
                body = json.loads(response.content)
            except ValueError:
                body = response.text
        try:
            sent = response.request.content
        except httpx2.RequestNotRead:
            sent = b""
        self.exchanges.append(Exchange(response.request.method, str(response.request.url), response.status_code,
                                       dict(response.headers), body, sent))

    def client(self, headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
               auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
        """An httpx2 client reporting here; its signature fits ``sse_client(httpx_client_factory=...)``."""
        return httpx2.AsyncClient(headers=headers, auth=auth, timeout=timeout or httpx2.Timeout(10, read=30),
                                  event_hooks={"response": [self.on_response]})

    def refusals(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.status >= 400]


@asynccontextmanager
async def connect(url: str, *, mode: str = "auto", headers: dict[str, str] | None = None,
                  wire: Wire | None = None, auth: httpx2.Auth | None = None) -> AsyncIterator[Client]:
    """The SDK's own streamable HTTP client for ``url`` (``mode`` as ``Client`` takes it), its HTTP
    answers reported to ``wire``; ``read_timeout_seconds`` is short so a lost answer fails fast."""
    wire = wire or Wire()
    async with wire.client(headers=headers, auth=auth) as http, \
            Client(streamable_http_client(url, http_client=http), mode=mode, read_timeout_seconds=10) as client:
        yield client


#: ``Client(mode=...)`` and the protocol version it ends up speaking: the 2.x default (``auto``:
#: ``server/discover``, stateless POSTs) and the handshake era (``initialize``, ``Mcp-Session-Id``,
#: GET stream, DELETE)
MODES = [pytest.param("auto", "2026-07-28", id="2026-07-28"),
         pytest.param("legacy", "2025-11-25", id="2025-11-25-stateful")]


def sse_messages(text: str) -> list[Any]:
    """The JSON-RPC messages of the ``message`` events in an SSE body."""
    messages = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].strip() for line in block.split("\n") if line.startswith("data:")]
        if data and data[0]:
            messages.append(json.loads("\n".join(data)))
    return messages
