"""The answer side of MCP resources, against an upstream that answers whatever a test asks.

The SDK interop suites (tests/interop) show the normal conversations; these show what the
enforcer does with answers a well-behaved SDK server never sends: list results in JSON and
in event streams split anywhere, lists that cannot be parsed or are compressed, an endpoint
event with an absolute URL, a body that is not JSON-RPC. A list that cannot be filtered is
never passed on (fail closed), and answers that need no filtering arrive byte for byte.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    ISSUER,
    JWKSEndpoint,
    Recorded,
    RecordingUpstream,
    SigningKey,
    claims,
    jwks,
    serve_enforcer,
    serving,
    sign,
)

TOOLS = [{"name": "echo", "inputSchema": {}}, {"name": "delete_all", "inputSchema": {}},
         {"name": "search_docs", "description": "ünïcode kept", "inputSchema": {}}, {"inputSchema": {}}]

POLICY = """version: 1
issuers:
  - id: test
    issuer: {issuer}
    jwks_uri: {jwks}
    algorithms: [ES256]
resources:
  - id: tools
    resource: http://127.0.0.1:8080/mcp
    match: {{path_prefix: /mcp}}
    upstream: {upstream}/upstream-mcp
    issuers: [test]
    mcp: {mcp}
    rules:
      - id: no-deletes
        effect: deny
        mcp: {{tools: ["delete_*"]}}
      - id: plumbing
        effect: allow
        mcp: {{methods: ["initialize", "notifications/*", "tools/list"]}}
      - id: tools
        effect: allow
        mcp: {{methods: [tools/call]}}
      - id: streams
        effect: allow
        methods: [GET, DELETE]
"""

Answer = Callable[[Recorded], tuple[int, list[tuple[bytes, bytes]], list[bytes]]]


@dataclass
class World:
    upstream: RecordingUpstream
    base: str
    key: SigningKey
    token: str = ""
    answer: Answer | None = None

    def token_for(self, sub: str, client_id: str) -> str:
        return sign(self.key, claims(sub=sub, client_id=client_id, scope="tools:call"))

    def post(self, message: Any, **headers: str) -> httpx.Response:
        return httpx.post(f"{self.base}/mcp", content=json.dumps(message).encode(), timeout=10,
                          headers={"authorization": f"Bearer {self.token}", "content-type": "application/json",
                                   "accept": "application/json, text/event-stream", **headers})

    def get(self, path: str = "/mcp", **headers: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", timeout=10,
                         headers={"authorization": f"Bearer {self.token}", "accept": "text/event-stream", **headers})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path) as world:
        yield world


@contextmanager
def running_world(tmp_path: Path, mcp: str = "true") -> Iterator[World]:
    key = SigningKey.generate("ES256", kid="k1")
    holder: dict[str, World] = {}

    async def handle(send: Any, record: Recorded, receive: Any) -> None:
        status, headers, chunks = holder["world"].answer(record)  # type: ignore[misc]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    upstream = RecordingUpstream(handler=handle)
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(upstream) as upstream_server:
        policy = POLICY.format(issuer=ISSUER, jwks=f"{issuer.url}/jwks", upstream=upstream_server.url, mcp=mcp)
        with serve_enforcer(tmp_path, policy) as (_, enforcer):
            world = holder["world"] = World(upstream, enforcer.url, key)
            world.token = world.token_for("alice", "agent-42")
            yield world


def json_answer(document: Any, **extra: bytes) -> Answer:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), *((k.encode(), v) for k, v in extra.items())]
    return lambda record: (200, headers, [body])


def sse_answer(stream: bytes, *, pieces: int = 1) -> Answer:
    size = max(1, len(stream) // pieces)
    chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
    return lambda record: (200, [(b"content-type", b"text/event-stream")], chunks)


def listed(document: Any) -> list[str]:
    return [tool.get("name") for tool in document["result"]["tools"]]


LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def test_MCP_13_a_json_tools_list_holds_only_callable_tools(world: World) -> None:
    world.answer = json_answer({"jsonrpc": "2.0", "id": 1, "result": {"tools": TOOLS}})
    response = world.post(LIST)
    assert response.status_code == 200
    assert listed(response.json()) == ["echo", "search_docs"]
    assert response.json()["result"]["tools"][1]["description"] == "ünïcode kept"
    assert int(response.headers["content-length"]) == len(response.content)
    assert world.upstream.requests[-1].header("accept-encoding") == "identity"


@pytest.mark.parametrize("pieces", [1, 3, 7, 1000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_MCP_13_an_event_stream_tools_list_is_filtered_wherever_it_is_split(world: World, pieces: int,
                                                                            newline: bytes) -> None:
    result = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": TOOLS}}).encode()
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}).encode()
    stream = (b": keep-alive" + newline * 2 + b"event: message" + newline + b"id: 7" + newline +
              b"data: " + note + newline * 2 + b"id: 8" + newline + b"data: " + result + newline * 2)
    world.answer = sse_answer(stream, pieces=pieces)
    response = world.post(LIST)
    assert response.status_code == 200
    events = response.content.split(b"\n\n") if newline == b"\n" else None
    assert b": keep-alive" in response.content and b"data: " + note in response.content
    data = [line for line in response.content.splitlines() if line.startswith(b"data: ")]
    assert listed(json.loads(data[-1][6:])) == ["echo", "search_docs"]
    assert b"id: 8" in response.content
    if events is not None:
        assert events[0] == b": keep-alive"


def test_MCP_13_a_list_pushed_on_the_get_stream_is_filtered(world: World) -> None:
    result = json.dumps({"jsonrpc": "2.0", "id": 9, "result": {"tools": TOOLS}}).encode()
    world.answer = sse_answer(b"data: " + result + b"\n\n")
    response = world.get()
    assert response.status_code == 200
    assert listed(json.loads(response.content.split(b"data: ", 1)[1])) == ["echo", "search_docs"]


def test_answers_that_need_no_filtering_arrive_byte_for_byte(world: World) -> None:
    odd = b'{"jsonrpc": "2.0",   "id": 3, "result": {"content": [{"type": "text", "text": "ok"}]}}'
    world.answer = lambda record: (200, [(b"content-type", b"application/json"),
                                         (b"content-encoding", b"identity")], [odd])
    response = world.post({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo"}})
    assert (response.status_code, response.content) == (200, odd)
    assert world.upstream.requests[-1].header("accept-encoding") != "identity"


@pytest.mark.parametrize(("name", "answer"), [
    ("not-json", lambda r: (200, [(b"content-type", b"application/json")], [b"{not json"])),
    ("tools-not-a-list", json_answer({"jsonrpc": "2.0", "id": 1, "result": {"tools": {"echo": {}}}})),
    ("compressed", lambda r: (200, [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")],
                              [gzip.compress(json.dumps({"result": {"tools": TOOLS}}).encode())])),
    ("wrong-type", lambda r: (200, [(b"content-type", b"text/plain")], [json.dumps(TOOLS).encode()])),
])
def test_MCP_13_a_list_that_cannot_be_filtered_is_not_passed_on(world: World, name: str, answer: Answer) -> None:
    world.answer = answer
    response = world.post(LIST)
    assert response.status_code == 502
    assert response.json()["reason"] == "invalid_upstream_response"
    assert b"delete_all" not in response.content


def test_MCP_13_an_event_stream_with_an_unreadable_event_is_cut(world: World) -> None:
    good = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {}}).encode()
    world.answer = sse_answer(b"data: " + good + b"\n\ndata: {\"result\": {\"tools\": [{\"name\": \"delete_all\"\n\n")
    # the stream starts (200), then the enforcer cuts it rather than send the unreadable event
    with pytest.raises(httpx.RemoteProtocolError):
        world.get()


def test_a_legacy_endpoint_event_is_moved_under_the_public_prefix_and_binds_its_session(world: World) -> None:
    upstream_url = "http://127.0.0.1:1/upstream-mcp/messages/?session_id=abc123"
    world.answer = sse_answer(f"event: endpoint\ndata: {upstream_url}\n\n".encode())
    response = world.get("/mcp/sse")
    assert response.status_code == 200
    assert response.text == "event: endpoint\ndata: /mcp/messages/?session_id=abc123\n\n"
    world.answer = lambda record: (202, [(b"content-type", b"text/plain")], [b"Accepted"])
    accepted = httpx.post(f"{world.base}/mcp/messages/?session_id=abc123", timeout=10,
                          content=json.dumps(LIST).encode(),
                          headers={"authorization": f"Bearer {world.token}", "content-type": "application/json"})
    assert (accepted.status_code, accepted.text) == (202, "Accepted")
    assert world.upstream.requests[-1].query == "session_id=abc123"


def test_the_endpoint_event_is_moved_under_the_prefix_without_session_binding_too(tmp_path: Path) -> None:
    with running_world(tmp_path, "{bind_sessions: false, filter_lists: false}") as world:
        world.answer = sse_answer(b"event: endpoint\ndata: /upstream-mcp/messages/?session_id=xyz\n\n")
        assert world.get("/mcp/sse").text == "event: endpoint\ndata: /mcp/messages/?session_id=xyz\n\n"
        world.answer = lambda record: (202, [(b"content-type", b"text/plain")], [b"Accepted"])
        assert world.post(LIST, **{"mcp-session-id": "never-issued"}).status_code == 202  # nothing is bound


@pytest.mark.parametrize(("body", "why"), [
    (b"", "empty"), (b"tools/call echo", "not JSON"), (b'{"method": "tools/call"}', "no jsonrpc member"),
    (b"[]", "empty batch"), (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}', "no tool name"),
])
def test_MCP_13_a_post_that_is_not_json_rpc_is_refused_and_not_forwarded(world: World, body: bytes,
                                                                          why: str) -> None:
    response = httpx.post(f"{world.base}/mcp", content=body, timeout=10,
                          headers={"authorization": f"Bearer {world.token}", "content-type": "application/json"})
    assert response.status_code == 400, why
    assert response.json()["error"] == "invalid_request"
    assert world.upstream.requests == []


def test_MCP_22_a_session_issued_to_one_caller_is_refused_to_another(world: World) -> None:
    world.answer = json_answer({"jsonrpc": "2.0", "id": 1, "result": {}}, **{"mcp-session-id": b"s-1"})
    assert world.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).status_code == 200
    world.answer = json_answer({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}})
    assert world.post(LIST, **{"mcp-session-id": "s-1"}).status_code == 200
    forwarded = len(world.upstream.requests)
    alice = world.token
    for sub, client_id in (("bob", "agent-42"), ("alice", "agent-7")):  # another user; another agent
        world.token = world.token_for(sub, client_id)
        refused = world.post(LIST, **{"mcp-session-id": "s-1"})
        assert refused.status_code == 404 and refused.json()["reason"] == "unknown_session"
    assert len(world.upstream.requests) == forwarded
    world.token = alice
    world.answer = lambda record: (204, [], [])
    assert httpx.delete(f"{world.base}/mcp", timeout=10, headers={
        "authorization": f"Bearer {world.token}", "mcp-session-id": "s-1"}).status_code == 204
    assert world.post(LIST, **{"mcp-session-id": "s-1"}).status_code == 404  # closed: the binding is gone

