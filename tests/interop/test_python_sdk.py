"""The official Python MCP SDK (2.x) on both sides of the enforcer: streamable HTTP.

The client speaks the 2.x default (protocol 2026-07-28: ``server/discover``, stateless POSTs with
``Mcp-Method`` / ``Mcp-Name`` headers) and, with ``Client(mode="legacy")``, the 2025-11-25
handshake era (``initialize``, ``Mcp-Session-Id``, GET stream, DELETE). What the SDK would never
send (batches, lying headers, someone else's session) goes out through plain httpx.

What an SDK client sees when the enforcer refuses a POST: its JSON error body is not a JSON-RPC
message, so the SDK raises ``MCPError`` with code ``-32603`` (INTERNAL_ERROR) and the message
"Server returned an error response"; the status, the reason and the rule id are only visible on
the wire (``Wire`` reads them through an httpx2 event hook). The connection stays usable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR

from tests.interop.conftest import (
    ALICE,
    BOB,
    MODES,
    Stack,
    Wire,
    connect,
    issuer_block,
    mcp_policy,
    sse_messages,
    start_enforcer,
)

HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"


def tool_names(listing: Any) -> list[str]:
    return [tool.name for tool in listing.tools]


def tools_called(stack: Stack) -> list[str]:
    """The tools/call names in every request body the upstream received (batches included)."""
    names = []
    for seen in stack.upstream.record.seen:
        try:
            body = json.loads(bytes(seen.body))
        except ValueError:
            continue
        for message in body if isinstance(body, list) else [body]:
            if isinstance(message, dict) and message.get("method") == "tools/call":
                names.append(message.get("params", {}).get("name"))
    return names


# -- the SDK client ----------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "version"), MODES)
def test_listings_hold_only_what_the_caller_may_use(world: Stack, mode: str, version: str) -> None:
    async def scenario() -> None:
        async with connect(world.mcp_url, mode=mode, headers=world.auth(ALICE)) as client:
            assert client.protocol_version == version
            assert tool_names(await client.list_tools()) == ["echo", "search_docs"]
            assert [p.name for p in (await client.list_prompts()).prompts] == ["summarize"]
            assert [str(r.uri) for r in (await client.list_resources()).resources] == ["docs://readme"]
        async with connect(f"{world.upstream.url}/mcp", mode=mode) as direct:
            assert tool_names(await direct.list_tools()) == ["echo", "search_docs", "delete_all"]
            assert [p.name for p in (await direct.list_prompts()).prompts] == ["summarize", "leak_secrets"]
            assert [str(r.uri) for r in (await direct.list_resources()).resources] == ["docs://readme",
                                                                                         "secrets://keys"]

    anyio.run(scenario)


@pytest.mark.parametrize(("mode", "version"), MODES)
def test_an_agent_without_tool_grants_lists_no_tools(world: Stack, mode: str, version: str) -> None:
    async def scenario() -> None:
        async with connect(world.mcp_url, mode=mode, headers=world.auth(BOB)) as client:
            assert client.protocol_version == version
            assert tool_names(await client.list_tools()) == []
            assert (await client.list_prompts()).prompts == []

    anyio.run(scenario)


@pytest.mark.parametrize(("mode", "version"), MODES)
def test_allowed_calls_run(world: Stack, mode: str, version: str) -> None:
    async def scenario() -> None:
        async with connect(world.mcp_url, mode=mode, headers=world.auth(ALICE)) as client:
            result = await client.call_tool("echo", {"text": "hello through the enforcer"})
            assert not result.is_error
            assert result.content[0].text == "hello through the enforcer"  # type: ignore[union-attr]
            assert (await client.call_tool("search_docs", {"query": "tokens"})).structured_content == {
                "result": "3 pages match 'tokens'"}
            readme = await client.read_resource("docs://readme")
            assert readme.contents[0].text == "read me"  # type: ignore[union-attr]

    anyio.run(scenario)
    assert world.upstream.ran == ["echo", "search_docs"]
    received = [s for s in world.upstream.record.seen if s.method == "POST"]
    assert received and all(s.headers.get("x-enforcer-sub") == "alice" for s in received)
    assert all("authorization" not in s.headers for s in world.upstream.record.seen)


@pytest.mark.parametrize(("mode", "version"), MODES)
def test_a_denied_call_is_refused_and_never_runs(world: Stack, mode: str, version: str) -> None:
    wire = Wire()

    async def scenario() -> None:
        async with connect(world.mcp_url, mode=mode, headers=world.auth(ALICE), wire=wire) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("delete_all", {})
            assert refused.value.code == INTERNAL_ERROR
            assert refused.value.message == "Server returned an error response"
            # the connection survives the refusal
            assert (await client.call_tool("echo", {"text": "still here"})).content[0].text == "still here"  # type: ignore[union-attr]

    anyio.run(scenario)
    [refusal] = wire.refusals()
    assert refusal.status == 403
    assert {key: refusal.body.get(key) for key in ("error", "reason", "rule")} == {
        "error": "access_denied", "reason": "denied_by_rule", "rule": "no-deletes"}
    assert refusal.body["error_description"]
    assert "delete_all" not in world.upstream.ran
    assert "delete_all" not in tools_called(world)
    assert world.upstream.ran == ["echo"]


def test_a_call_by_an_agent_without_grants_is_refused(world: Stack) -> None:
    wire = Wire()

    async def scenario() -> None:
        async with connect(world.mcp_url, headers=world.auth(BOB), wire=wire) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("echo", {"text": "not for bob"})
            assert refused.value.code == INTERNAL_ERROR

    anyio.run(scenario)
    [refusal] = wire.refusals()
    assert refusal.status == 403
    assert refusal.body["reason"] == "no_matching_rule"
    assert "rule" not in refusal.body
    assert world.upstream.ran == []


def test_the_handshake_era_session_keeps_its_stream_and_is_closed(world: Stack) -> None:
    async def scenario() -> None:
        async with connect(world.mcp_url, mode="legacy", headers=world.auth(ALICE)) as client:
            await client.call_tool("echo", {"text": "x"})
            with anyio.fail_after(5):  # the client opens its GET stream on its own, after the handshake
                while not any(s.method == "GET" for s in world.upstream.record.seen):
                    await anyio.sleep(0.02)

    anyio.run(scenario)
    seen = world.upstream.record.seen
    session_ids = {s.headers.get("mcp-session-id") for s in seen} - {None}
    assert len(session_ids) == 1
    [session_id] = session_ids
    methods = [s.method for s in world.upstream.record.with_session(session_id)]
    assert "GET" in methods
    assert methods[-1] == "DELETE"
    assert world.upstream.ran == ["echo"]


# -- what only a hand-made request does ------------------------------------------------------

ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {}}


def call(name: str, arguments: dict[str, Any] | None = None, rid: int = 1, meta: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if meta:
        params["_meta"] = META
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


def modern_headers(stack: Stack, method: str, name: str | None) -> dict[str, str]:
    headers = {**ACCEPT, **stack.auth(ALICE), "mcp-protocol-version": MODERN, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return headers


class Session:
    """A handshake-era session opened by hand: ``initialize``, then ``notifications/initialized``."""

    def __init__(self, http: httpx.Client, stack: Stack) -> None:
        self.http = http
        self.stack = stack
        self.auth = stack.auth(ALICE)
        opened = http.post("/mcp", headers={**ACCEPT, **self.auth}, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": HANDSHAKE, "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}})
        assert opened.status_code == 200, opened.text
        self.id = opened.headers["mcp-session-id"]
        assert sse_messages(opened.text)[0]["result"]["protocolVersion"] == HANDSHAKE
        ready = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert ready.status_code == 202, ready.text

    def headers(self, auth: dict[str, str] | None = None) -> dict[str, str]:
        return {**ACCEPT, **(self.auth if auth is None else auth), "mcp-session-id": self.id,
                "mcp-protocol-version": HANDSHAKE}

    def post(self, body: Any, auth: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post("/mcp", headers=self.headers(auth), content=json.dumps(body))

    def stream_status(self, auth: dict[str, str] | None = None) -> tuple[int, str, Any]:
        """Open the GET stream, note status, content type and (when refused) the body; close it."""
        with self.http.stream("GET", "/mcp", headers=self.headers(auth)) as response:
            body = json.loads(response.read()) if response.status_code >= 400 else None
            return response.status_code, response.headers.get("content-type", ""), body

    def delete(self, auth: dict[str, str] | None = None) -> httpx.Response:
        return self.http.delete("/mcp", headers=self.headers(auth))

    def reached_upstream(self) -> int:
        return len(self.stack.upstream.record.with_session(self.id))


def assert_unknown_session(status: int, body: Any) -> None:
    assert status == 404
    assert body["error"] == "invalid_request"
    assert body["reason"] == "unknown_session"


def test_a_batch_with_one_denied_call_is_refused_whole(world: Stack, http: httpx.Client) -> None:
    session = Session(http, world)
    before = session.reached_upstream()
    refused = session.post([call("echo", {"text": "a"}, 1), call("delete_all", {}, 2)])
    assert refused.status_code == 403
    assert refused.json()["reason"] == "denied_by_rule"
    assert refused.json()["rule"] == "no-deletes"
    assert session.reached_upstream() == before
    assert world.upstream.ran == []
    assert tools_called(world) == []
    # the same batch without the denied call is judged allowed and forwarded
    session.post([call("echo", {"text": "a"}, 3), call("search_docs", {"query": "q"}, 4)])
    assert session.reached_upstream() == before + 1
    assert session.delete().status_code == 200


@pytest.mark.parametrize(("body_tool", "header_method", "header_name"), [
    pytest.param("delete_all", "tools/call", "echo", id="name-hides-a-denied-tool"),
    pytest.param("search_docs", "tools/call", "echo", id="name-differs-from-an-allowed-tool"),
    pytest.param("echo", "tools/list", None, id="method-differs"),
])
def test_routing_headers_that_disagree_with_the_body_are_refused(
        world: Stack, http: httpx.Client, body_tool: str, header_method: str, header_name: str | None) -> None:
    response = http.post("/mcp", headers=modern_headers(world, header_method, header_name),
                         content=json.dumps(call(body_tool, {"text": "x"} if body_tool == "echo" else {}, meta=True)))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert world.upstream.record.seen == []
    assert world.upstream.ran == []


def test_routing_headers_that_agree_with_the_body_are_forwarded(world: Stack, http: httpx.Client) -> None:
    response = http.post("/mcp", headers=modern_headers(world, "tools/call", "echo"),
                         content=json.dumps(call("echo", {"text": "agreed"}, meta=True)))
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == "agreed"
    assert world.upstream.ran == ["echo"]


def test_a_session_belongs_to_the_principal_it_was_issued_to(world: Stack, http: httpx.Client) -> None:
    session = Session(http, world)
    mallory = world.auth(BOB)
    before = session.reached_upstream()

    # a method bob may use on his own (the plumbing rule): only the session makes it his to refuse
    hijack = session.post({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, auth=mallory)
    assert_unknown_session(hijack.status_code, hijack.json())
    status, _, body = session.stream_status(auth=mallory)
    assert_unknown_session(status, body)
    closing = session.delete(auth=mallory)
    assert_unknown_session(closing.status_code, closing.json())
    assert session.reached_upstream() == before
    assert world.upstream.ran == []

    # the owner's session is untouched: its GET stream opens, a call runs, DELETE ends it
    status, content_type, _ = session.stream_status()
    assert (status, content_type.split(";")[0]) == (200, "text/event-stream")
    answered = session.post(call("echo", {"text": "as alice"}))
    assert answered.status_code == 200
    assert sse_messages(answered.text)[0]["result"]["content"][0]["text"] == "as alice"
    assert world.upstream.ran == ["echo"]
    assert session.delete().status_code == 200
    assert session.reached_upstream() == before + 3
    gone = session.post(call("echo", {"text": "after close"}))
    assert gone.status_code == 404
    assert world.upstream.ran == ["echo"]


def test_a_session_the_enforcer_never_saw_issued_is_refused(world: Stack, http: httpx.Client) -> None:
    made_up = "0" * 32
    headers = {**ACCEPT, **world.auth(ALICE), "mcp-session-id": made_up, "mcp-protocol-version": HANDSHAKE}
    response = http.post("/mcp", headers=headers, content=json.dumps(call("echo", {"text": "x"})))
    assert_unknown_session(response.status_code, response.json())
    assert world.upstream.record.seen == []


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_streams_and_closing_need_a_token(world: Stack, http: httpx.Client, method: str) -> None:
    session = Session(http, world)
    before = session.reached_upstream()
    headers = session.headers(auth={})
    with http.stream(method, "/mcp", headers=headers) as response:
        response.read()
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{world.url}/.well-known/oauth-protected-resource/mcp"')
    assert session.reached_upstream() == before
    assert session.delete().status_code == 200


@pytest.mark.parametrize(("mode", "version"), MODES)
def test_a_refusal_in_json_rpc_reaches_the_sdk_caller_with_its_reason(
        mcp_stack: Stack, tmp_path: Path, mode: str, version: str) -> None:
    """With ``mcp: {error_format: jsonrpc}`` the 403 body is a JSON-RPC error for the call's id,
    which the SDK raises as it is: the agent sees the rule, the reason and what to fix."""
    enforcer = start_enforcer(tmp_path, lambda origin: mcp_policy(
        origin=origin, upstream=mcp_stack.upstream.url, issuer_block=issuer_block(mcp_stack.jwks_url),
    ).replace("mcp: true", "mcp: {error_format: jsonrpc}"))
    wire = Wire()
    url = f"{enforcer.url}/mcp"

    async def scenario() -> MCPError:
        headers = {"authorization": f"Bearer {mcp_stack.token(ALICE, url)}"}
        async with connect(url, mode=mode, headers=headers, wire=wire) as client:
            assert client.protocol_version == version
            with pytest.raises(MCPError) as refused:
                await client.call_tool("delete_all", {})
            return refused.value

    try:
        mcp_stack.upstream.record.clear()
        error = anyio.run(scenario)
    finally:
        enforcer.stop()
    assert error.code == -32003
    assert error.message == "denied by policy rule no-deletes"
    assert error.data == {"error": "access_denied", "error_description": "denied by policy rule no-deletes",
                          "reason": "denied_by_rule", "rule": "no-deletes"}
    [refusal] = wire.refusals()
    assert refusal.status == 403 and "www-authenticate" in refusal.headers
    assert "delete_all" not in mcp_stack.upstream.ran
