"""The official Python MCP SDK's legacy HTTP+SSE transport through the enforcer.

``mcp.client.sse.sse_client`` opens ``GET .../sse``; the upstream's first event, ``endpoint``,
names ``/legacy/messages/?session_id=...`` (its own path), which the enforcer rewrites to the public
prefix ``/legacy-mcp``; the client POSTs every message there and reads every answer, tools/list
results included, from the event stream.

What this client sees when the enforcer refuses a POST: ``sse_client`` calls
``raise_for_status()`` on the POST, and the ``httpx2.HTTPStatusError`` ends its writer task (it is
logged, not raised to the caller), so the refused request is never answered: the call fails with
``MCPError`` code ``-32001`` (REQUEST_TIMEOUT) once its read timeout runs out, and the connection
can send nothing more. Only the wire (``Wire``) shows the 403 and the rule id.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from mcp.types import REQUEST_TIMEOUT

from tests.interop.conftest import ALICE, BOB, Principal, Stack, Wire


@asynccontextmanager
async def connect_sse(url: str, headers: dict[str, str] | None, wire: Wire,
                      sessions: list[str]) -> AsyncIterator[Client]:
    transport = sse_client(url, headers=headers, timeout=10, sse_read_timeout=30,
                           httpx_client_factory=wire.client, on_session_created=sessions.append)
    async with Client(transport, mode="legacy", read_timeout_seconds=10) as client:
        yield client


def legacy_auth(stack: Stack, who: Principal) -> dict[str, str]:
    return stack.auth(who, resource=f"{stack.url}/legacy-mcp")


def test_listing_is_filtered_and_an_allowed_call_runs(world: Stack) -> None:
    wire, sessions = Wire(), []

    async def scenario() -> None:
        async with connect_sse(world.legacy_sse_url, legacy_auth(world, ALICE), wire, sessions) as client:
            assert client.protocol_version == "2025-11-25"
            assert [t.name for t in (await client.list_tools()).tools] == ["echo", "search_docs"]
            assert [p.name for p in (await client.list_prompts()).prompts] == ["summarize"]
            result = await client.call_tool("search_docs", {"query": "sse"})
            assert result.structured_content == {"result": "3 pages match 'sse'"}
        async with connect_sse(f"{world.upstream.url}/legacy/sse", None, Wire(), []) as direct:
            assert [t.name for t in (await direct.list_tools()).tools] == ["echo", "search_docs", "delete_all"]

    anyio.run(scenario)
    assert world.upstream.ran == ["search_docs"]
    [session_id] = sessions
    posts = [e for e in wire.exchanges if e.method == "POST"]
    assert posts and all(e.url == f"{world.url}/legacy-mcp/messages/?session_id={session_id}" for e in posts)
    assert {e.status for e in posts} == {202}


def test_a_denied_call_is_refused_and_never_runs(world: Stack) -> None:
    wire = Wire()

    async def scenario() -> None:
        async with connect_sse(world.legacy_sse_url, legacy_auth(world, ALICE), wire, []) as client:
            with anyio.fail_after(8), pytest.raises(MCPError) as refused:
                await client.call_tool("delete_all", {}, read_timeout_seconds=1.5)
            assert refused.value.code == REQUEST_TIMEOUT

    anyio.run(scenario)
    [refusal] = wire.refusals()
    assert refusal.status == 403
    assert refusal.body["reason"] == "denied_by_rule"
    assert refusal.body["rule"] == "no-deletes"
    assert world.upstream.ran == []
    bodies = [bytes(s.body) for s in world.upstream.record.seen if s.method == "POST"]
    assert not any(b"delete_all" in body for body in bodies)


def test_a_session_id_belongs_to_the_principal_whose_stream_received_it(world: Stack) -> None:
    sessions: list[str] = []

    async def scenario() -> None:
        async with connect_sse(world.legacy_sse_url, legacy_auth(world, ALICE), Wire(), sessions) as client:
            assert (await client.read_resource("docs://readme")).contents[0].text == "read me"  # type: ignore[union-attr]
            [session_id] = sessions
            seen_before = len(world.upstream.record.with_session(session_id))
            async with httpx.AsyncClient(base_url=world.url, timeout=10) as http:
                target = f"/legacy-mcp/messages/?session_id={session_id}"
                body = json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/list"})
                headers = {"content-type": "application/json", **legacy_auth(world, BOB)}
                hijack = await http.post(target, headers=headers, content=body)
                assert hijack.status_code == 404
                assert hijack.json()["reason"] == "unknown_session"
                made_up = await http.post(f"/legacy-mcp/messages/?session_id={'0' * 32}", content=body,
                                          headers={"content-type": "application/json",
                                                   **legacy_auth(world, ALICE)})
                assert made_up.status_code == 404
                assert made_up.json()["reason"] == "unknown_session"
            assert len(world.upstream.record.with_session(session_id)) == seen_before
            assert world.upstream.record.with_session("0" * 32) == []
            # the owner's session carries on
            await client.read_resource("docs://readme")
            assert len(world.upstream.record.with_session(session_id)) == seen_before + 1

    anyio.run(scenario)
    assert world.upstream.ran == []
    assert not any(s.headers.get("x-enforcer-sub") == "bob" for s in world.upstream.record.seen)
