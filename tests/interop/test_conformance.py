"""The official MCP conformance suite grades real MCP servers directly and through the enforcer.

npm ``@modelcontextprotocol/conformance`` (run on the Node 22 binary of ``nodetools``) runs every
server scenario it has (``--suite all``) against two instances of one server at once: one at its
own URL, one behind an ``mcp: true`` enforcer resource whose only rule allows the suite's client.
The suite sends no ``Authorization`` header, so the second run goes through ``TokenInjector``, a
small pass-through that adds a valid token and relays both ways, streaming. Two servers are
graded: the Python SDK (``mcp`` 2.x, which speaks both the stateful 2025-11-25 wire and the
stateless 2026-07-28 one, so every transport scenario applies) and npm server-everything (the
TypeScript SDK's reference server, 2025-11-25 only).

Every check must fail through the enforcer exactly when it fails directly: the enforcer in front
of a server must not change what an MCP client sees of it (sessions, event streams and their
resumption, header validation, DNS-rebinding protection, caching hints of list results, ...),
except for the differences listed, with their reason, in ``ACCEPTED_DIFFERENCES``. The servers
lack many of the suite's ``test_*`` tools, so many checks fail both ways; that is fine, the
comparison is what counts. ``SCENARIOS`` are the transport scenarios on which a server must also
pass checks, so that the comparison there means something.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import anyio
import pytest
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from pydantic import Field
from starlette.applications import Starlette
from yarl import URL

from enforcer.app import EnforcerApp
from enforcer.policy.loader import load_policy
from tests.interop.nodetools import NODE_DIR, node22, package_file, running_node
from tests.support import (
    ISSUER,
    JWKSEndpoint,
    ServerThread,
    SigningKey,
    claims,
    free_port,
    jwks,
    serving,
    sign,
    wait_for,
)

#: per graded server, the scenarios of the suite that concern the transport (sessions, event
#: streams, headers) and the list results the enforcer rewrites (caching hints must survive the
#: rewrite), on which it passes checks; server-everything speaks only the handshake-era wire
TRANSPORT_2025 = (
    "server-initialize",            # initialize, Mcp-Session-Id
    "server-session-lifecycle",     # initialized notification on the session, DELETE, 404 after it
    "ping",
    "tools-list",
    "server-sse-multiple-streams",  # concurrent POST event streams
    "dns-rebinding-protection",     # a foreign Host / Origin is refused
)
SCENARIOS = {
    "python-sdk": (*TRANSPORT_2025,
                   "tools-call-simple-text",
                   "server-sse-polling",       # a POST stream closed mid-call, resumed by GET with Last-Event-ID
                   "server-stateless",         # 2026-07-28: server/discover, no session, version and header errors
                   "http-header-validation",   # Mcp-Method / Mcp-Name against the body (SEP-2243)
                   "http-custom-header-server-validation",  # Mcp-Param-* headers and their Base64 form
                   "caching"),                 # ttlMs / cacheScope on list results (SEP-2549)
    "server-everything": TRANSPORT_2025,
}
CLIENT_ID = "conformance-suite"
#: the graded servers: the Python SDK (below) and npm server-everything (the TypeScript SDK)
SERVERS = ("python-sdk", "server-everything")
#: checks whose outcome the enforcer may change: (server, scenario, check id, check name) -> why.
#: A difference not listed fails the test, and so does a listed one that no longer differs.
ACCEPTED_DIFFERENCES: dict[tuple[str, str, str, str], str] = {
    ("server-everything", "server-session-lifecycle", "server-session-terminated-returns-404",
     "SessionTerminatedReturns404"):
        "server-everything answers 400 for a session it has ended; the enforcer ends the session's binding "
        "on the 2xx to DELETE and answers 404 unknown_session itself, as MCP requires",
    ("server-everything", "tasks-request-headers", "tasks-headers-reject-mismatched-method",
     "TasksHeadersRejectMismatchedMethod"):
        "server-everything does not compare Mcp-Method with the body of tasks requests (it answers -32000); "
        "the enforcer does, and refuses the mismatch with HeaderMismatch (-32020) before it reaches the server",
}


# -- the graded server: the Python SDK, with the tools the scenarios call -------------------------


class MemoryEventStore(EventStore):
    """Every event of every stream, so a client can resume a stream after ``Last-Event-ID``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    async def store_event(self, stream_id: str, message: Any) -> str:
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        found = [i for i, (event_id, _, _) in enumerate(self.events) if event_id == last_event_id]
        if not found:
            return None
        stream = self.events[found[0]][1]
        for event_id, stream_id, message in self.events[found[0] + 1:]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def python_sdk_app() -> Starlette:
    server = MCPServer("interop-conformance", version="1.0.0", log_level="WARNING")

    @server.tool(description="Answer with one fixed text.")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Close the event stream mid-call; the result follows once the client resumes it.")
    async def test_reconnection(ctx: Context) -> str:
        await ctx.close_sse_stream()
        await anyio.sleep(0.2)
        return "Reconnection test completed"

    @server.tool(description="Look documents up in one region, named again by the Mcp-Param-Region header.")
    def find_docs(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return f"no documents in {region}"

    @server.prompt(description="Greet someone.")
    def greeting(name: str) -> str:
        return f"Say hello to {name}."

    @server.resource("docs://readme", mime_type="text/plain", description="The read-me.")
    def readme() -> str:
        return "read me"

    return server.streamable_http_app(event_store=MemoryEventStore(), retry_interval=100)


# -- the token-injecting pass-through ------------------------------------------------------------

_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                         b"trailer", b"transfer-encoding", b"upgrade"})


class TokenInjector:
    """ASGI app relaying every request to ``target`` with ``Authorization: Bearer <token>`` added.

    Both bodies stream through unchanged, and every other header too (``Host`` included, so a
    foreign Host still reaches the enforcer); when the client goes away, the exchange is dropped."""

    def __init__(self, target: str, token: str) -> None:
        self.target = target
        self.token = token
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._relay(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                    skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                    timeout=aiohttp.ClientTimeout(total=None))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _relay(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.lower() not in _HOP_BY_HOP and k.lower() != b"authorization"]
        headers.append(("Authorization", f"Bearer {self.token}"))
        framing = {k.lower(): v for k, v in scope["headers"] if k.lower() in (b"content-length", b"transfer-encoding")}
        body_done = asyncio.Event()

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ConnectionResetError("the client went away mid-body")
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    body_done.set()
                    return

        async def disconnected() -> None:
            await body_done.wait()
            while (await receive())["type"] != "http.disconnect":
                pass

        data = None
        if framing.get(b"content-length", b"0").strip() != b"0" or b"transfer-encoding" in framing:
            data = chunks()
        else:
            await receive()  # the (empty) body
            body_done.set()
        url = self.target + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        relay = asyncio.ensure_future(self._exchange(scope["method"], url, headers, data, send))
        gone = asyncio.ensure_future(disconnected())
        await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in (relay, gone):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await task

    async def _exchange(self, method: str, url: str, headers: list[tuple[str, str]],
                        data: AsyncIterator[bytes] | None, send: Any) -> None:
        assert self.session is not None
        async with self.session.request(method, URL(url, encoded=True), headers=headers, data=data,
                                        allow_redirects=False) as response:
            out = [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


# -- the enforcer in front of the graded server --------------------------------------------------


def policy(resource: str, upstream: str, jwks_url: str) -> str:
    return f"""version: 1
issuers:
  - id: test
    issuer: {ISSUER}
    jwks_uri: {jwks_url}
    algorithms: [ES256]
resources:
  - id: graded
    resource: {resource}
    match: {{path_prefix: /mcp}}
    upstream: {upstream}/mcp
    issuers: [test]
    mcp: {{error_format: jsonrpc}}             # refusals as MCP errors (HeaderMismatch is -32020)
    rules:
      - id: the-suite-may-do-anything
        effect: allow
        client_ids: [{CLIENT_ID}]
"""


def loopback_port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def graded_server(kind: str, logs: Path) -> Iterator[str]:
    """One instance of a graded server; yields its origin."""
    if kind == "python-sdk":
        with serving(python_sdk_app(), lifespan="on") as server:
            yield server.url
        return
    # npm server-everything, its own streamable HTTP launcher unchanged (on loopback: loopback.mjs)
    port = free_port()
    launcher = package_file("@modelcontextprotocol/server-everything", "dist/index.js")
    with running_node(["--import", (NODE_DIR / "loopback.mjs").as_uri(), str(launcher), "streamableHttp"],
                      env={"PORT": str(port)}, log=logs / f"server-everything-{port}.log") as process:
        wait_for(lambda: loopback_port_open(port) or process.proc.poll() is not None, "server-everything to listen")
        assert process.proc.poll() is None, f"server-everything exited:\n{process.stderr()}"
        yield f"http://127.0.0.1:{port}"


@dataclass
class Targets:
    server: str
    direct: str
    enforced: str


@pytest.fixture(scope="module", params=SERVERS)
def targets(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    """The MCP endpoint of one instance of the graded server, and that of the token injector in
    front of the enforcer in front of another instance."""
    logs = tmp_path_factory.mktemp(f"conformance-{request.param}")
    with quiet_sdk_server():
        yield from _targets(request.param, logs)


@contextmanager
def quiet_sdk_server() -> Iterator[None]:
    """The suite calls many tools and prompts the graded server lacks; the SDK logs a traceback
    for each. The checks say what matters, so those logs are kept out of test reports."""
    logger = logging.getLogger("mcp")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _targets(server: str, logs: Path) -> Iterator[Targets]:
    key = SigningKey.generate("ES256", kid="conformance")
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    token = sign(key, claims(aud=resource, sub="conformance", client_id=CLIENT_ID, scope=None,
                             exp=int(time.time()) + 3600))
    with graded_server(server, logs) as direct, graded_server(server, logs) as behind, \
            serving(JWKSEndpoint(document=jwks(key))) as issuer:
        path = logs / "policy.yaml"
        path.write_text(policy(resource, behind, f"{issuer.url}/jwks"))
        enforcer = ServerThread(EnforcerApp(load_policy([path])), port=port, lifespan="on").start()
        try:
            with serving(TokenInjector(enforcer.url, token), lifespan="on") as injector:
                yield Targets(server, f"{direct}/mcp", f"{injector.url}/mcp")
        finally:
            enforcer.stop()


# -- running the suite ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    scenario: str
    id: str
    name: str
    status: str  # SUCCESS | FAILURE | WARNING | INFO | SKIPPED
    message: str

    @property
    def failed(self) -> bool:
        return self.status == "FAILURE"


_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d\d-\d\dT[\d-]+Z$")


def run_suite(url: str, out: Path) -> list[Check]:
    """Every server scenario of the suite (``--suite all``) against ``url``, as the checks of
    each scenario's ``checks.json`` (the exit status only says whether every check passed)."""
    conformance = package_file("@modelcontextprotocol/conformance", "dist/index.js")
    done = subprocess.run([str(node22()), str(conformance), "server", "--url", url, "--suite", "all",
                           "--timeout", "20000", "-o", str(out)], capture_output=True, text=True, timeout=300)
    checks = []
    for path in sorted(out.glob("server-*/checks.json")):
        match = _RESULT_DIR.match(path.parent.name)
        assert match, f"unexpected result directory {path.parent}"
        checks += [Check(match["scenario"], c["id"], c["name"], c["status"], c.get("errorMessage") or "")
                   for c in json.loads(path.read_text())]
    assert checks, f"the suite graded nothing at {url} (exit {done.returncode}):\n" \
                   f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return checks


def differences(direct: list[Check], enforced: list[Check]) -> dict[tuple[str, str, str], str]:
    """Each (scenario, check id, check name) whose outcomes differ, with what each run said (a
    scenario may emit one id and name several times, one per case: all of them are compared)."""
    runs: dict[tuple[str, str, str], tuple[list[Check], list[Check]]] = defaultdict(lambda: ([], []))
    for index, checks in enumerate((direct, enforced)):
        for check in checks:
            runs[(check.scenario, check.id, check.name)][index].append(check)
    found = {}
    for key, (before, after) in sorted(runs.items()):
        if sorted(c.failed for c in before) != sorted(c.failed for c in after):
            found[key] = ("direct " + ", ".join(f"{c.status} {c.message[:150]}".strip() for c in before) +
                          "; through the enforcer " + ", ".join(f"{c.status} {c.message[:300]}".strip() for c in after))
    return found


def test_the_enforcer_changes_no_conformance_outcome(targets: Targets, tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        direct_run = pool.submit(run_suite, targets.direct, tmp_path / "direct")
        enforced_run = pool.submit(run_suite, targets.enforced, tmp_path / "enforced")
        direct, enforced = direct_run.result(), enforced_run.result()
    # the suite graded the server on every transport scenario, and the server passes checks there
    graded = {c.scenario for c in direct}
    assert set(SCENARIOS[targets.server]) <= graded, f"scenarios not run: {set(SCENARIOS[targets.server]) - graded}"
    for scenario in SCENARIOS[targets.server]:
        assert any(c.scenario == scenario and c.status == "SUCCESS" for c in direct), f"{scenario} passed nothing"
    assert {c.scenario for c in enforced} == graded
    found = {(targets.server, *key): text for key, text in differences(direct, enforced).items()}
    accepted = {key for key in ACCEPTED_DIFFERENCES if key[0] == targets.server}
    unexpected = {key: text for key, text in found.items() if key not in accepted}
    assert not unexpected, "checks the enforcer changes:\n" + "\n".join(
        f"{' / '.join(key)}: {text}" for key, text in unexpected.items())
    assert found.keys() == accepted, f"accepted differences that no longer differ: {sorted(accepted - found.keys())}"
