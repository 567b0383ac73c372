"""Mcp-Method / Mcp-Name headers against the JSON-RPC body (DESIGN.md section 4, MCP 2026-07-28)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enforcer.context import RequestInfo
from enforcer.errors import HeaderMismatch, InvalidRequest
from enforcer.mcp.inspect import check_headers, error_response, needs_inspection, parse_messages
from tests.support import claims, raw_request, sign


def request(*headers: tuple[bytes, bytes]) -> RequestInfo:
    return RequestInfo("POST", b"/mcp", b"", tuple(headers))


def body(*messages: Any) -> bytes:
    return json.dumps(messages[0] if len(messages) == 1 else list(messages)).encode()


CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
READ = {"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "file:///a.txt"}}
NOTE = {"jsonrpc": "2.0", "method": "notifications/initialized"}

AGREE = [
    pytest.param([(b"mcp-method", b"tools/call"), (b"mcp-name", b"echo")], body(CALL), id="tools-call"),
    pytest.param([(b"mcp-method", b"resources/read"), (b"mcp-name", b"file:///a.txt")], body(READ),
                 id="resources-read-uri"),
    pytest.param([(b"mcp-method", b"notifications/initialized")], body(NOTE), id="notification"),
    pytest.param([(b"mcp-method", b"tools/list")], body({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
                 id="method-without-name"),
    pytest.param([(b"mcp-method", b"tasks/get"), (b"mcp-name", b"task-9")],
                 body({"jsonrpc": "2.0", "id": 4, "method": "tasks/get", "params": {"taskId": "task-9"}}),
                 id="tasks-get-names-its-task"),
    pytest.param([(b"mcp-method", b" tools/call\t"), (b"mcp-name", b"echo  ")], body(CALL),
                 id="surrounding-whitespace-is-not-part-of-a-value"),
    pytest.param([(b"mcp-method", b"resources/subscribe")],
                 body({"jsonrpc": "2.0", "id": 5, "method": "resources/subscribe", "params": {"_meta": {}}}),
                 id="subscribe-without-uri-is-left-to-the-server"),
]

REFUSE = [
    pytest.param([(b"mcp-method", b"tools/list")], body(CALL), id="method-mismatch"),
    pytest.param([(b"mcp-method", b"tools/call"), (b"mcp-name", b"delete_all")], body(CALL), id="name-mismatch"),
    pytest.param([(b"mcp-name", b"echo")], body(READ), id="name-vs-uri-mismatch"),
    pytest.param([(b"mcp-method", b"TOOLS/CALL")], body(CALL), id="method-case-differs"),
    pytest.param([(b"mcp-method", b"tools/call"), (b"mcp-method", b"tools/call")], body(CALL), id="two-headers"),
    pytest.param([(b"mcp-method", b"tools/call")], body(CALL, CALL), id="batch-with-header"),
    pytest.param([(b"mcp-method", b"tools/call")], b"", id="empty-body"),
    pytest.param([(b"mcp-method", b"tools/call")], b"not json", id="not-json"),
    pytest.param([(b"mcp-method", b"tools/call")],
                 b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}', id="duplicate-member"),
    pytest.param([(b"mcp-method", b"tools/call")], body({"jsonrpc": "1.0", "id": 1, "method": "tools/call"}),
                 id="not-jsonrpc-2"),
    pytest.param([(b"mcp-method", b"tools/call")], body({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}),
                 id="tools-call-without-name"),
    pytest.param([(b"mcp-method", b"tools/call")], b"[]", id="empty-batch"),
    pytest.param([(b"mcp-method", b"tasks/get"), (b"mcp-name", b"task-1")],
                 body({"jsonrpc": "2.0", "id": 4, "method": "tasks/get", "params": {"taskId": "task-9"}}),
                 id="tasks-get-other-task"),
    pytest.param([(b"mcp-method", b"resources/subscribe")],
                 body({"jsonrpc": "2.0", "id": 5, "method": "resources/subscribe", "params": {"uri": 7}}),
                 id="subscribe-uri-not-a-string"),
]


@pytest.mark.parametrize(("headers", "payload"), AGREE)
def test_headers_that_match_the_body_pass(headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
    req = request(*headers)
    assert needs_inspection(req)
    check_headers(req, parse_messages(payload, 1 << 20))


@pytest.mark.parametrize(("headers", "payload"), REFUSE)
def test_headers_that_disagree_or_unparseable_bodies_are_invalid_requests(
        headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
    req = request(*headers)
    with pytest.raises(InvalidRequest):
        check_headers(req, parse_messages(payload, 1 << 20))


def test_requests_without_mcp_headers_are_not_inspected() -> None:
    assert not needs_inspection(request((b"content-type", b"application/json")))


def test_messages_are_classified() -> None:
    response = {"jsonrpc": "2.0", "id": 9, "result": {}}
    kinds = [(m.kind, m.method, m.name) for m in parse_messages(body(CALL, NOTE, response), 1 << 20)]
    assert kinds == [("request", "tools/call", "echo"), ("notification", "notifications/initialized", None),
                     ("response", None, None)]


def _post(stack, headers: list[tuple[str, str]], payload: bytes):  # type: ignore[no-untyped-def]
    token = sign(stack.key, claims())
    return raw_request(stack.enforcer.port, "/mcp", method="POST", body=payload,
                       headers=[("Authorization", f"Bearer {token}"), ("Content-Type", "application/json"),
                                *headers])


def test_matching_headers_are_forwarded_with_the_exact_body(stack) -> None:  # type: ignore[no-untyped-def]
    payload = b'{"jsonrpc": "2.0", "id": 1,  "method": "tools/call", "params": {"name": "echo"}}'
    response = _post(stack, [("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")], payload)
    assert response.status == 200, response.body
    assert [r.body for r in stack.upstream.requests] == [payload]
    assert stack.upstream.requests[0].header("mcp-name") == "echo"


def test_mismatch_is_400_and_never_forwarded(stack) -> None:  # type: ignore[no-untyped-def]
    response = _post(stack, [("Mcp-Method", "tools/list")], body(CALL))
    assert response.status == 400 and response.json()["error"] == "invalid_request"
    assert stack.upstream.requests == []


def test_body_over_the_limit_is_413_and_never_forwarded(stack) -> None:  # type: ignore[no-untyped-def]
    big = body({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "x": "a" * 1_100_000}})
    response = _post(stack, [("Mcp-Method", "tools/call")], big)
    assert response.status == 413 and response.json()["reason"] == "body_too_large"
    assert stack.upstream.requests == []


def test_body_is_not_read_before_the_token_is_verified(stack) -> None:  # type: ignore[no-untyped-def]
    big = body({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "x": "a" * 1_100_000}})
    response = raw_request(stack.enforcer.port, "/mcp", method="POST", body=big, headers=[("Mcp-Method", "x")])
    assert response.status == 401  # not 413: an anonymous client never makes the enforcer buffer its body


def test_a_json_rpc_refusal_answers_each_request_by_its_id() -> None:
    data = {"error": "access_denied", "reason": "denied_by_rule", "rule": "no-deletes"}
    call = b'{"jsonrpc": "2.0", "id": "a-1", "method": "tools/call", "params": {"name": "delete_all"}}'
    note = b'{"jsonrpc": "2.0", "method": "notifications/initialized"}'
    single = error_response(parse_messages(call, 4096), -32003, "denied", data)
    assert single == {"jsonrpc": "2.0", "id": "a-1", "error": {"code": -32003, "message": "denied", "data": data}}
    batch = error_response(parse_messages(b"[" + call + b"," + note + b"," + call.replace(b'"a-1"', b"7") + b"]",
                                          4096), -32003, "denied", data)
    assert [answer["id"] for answer in batch] == ["a-1", 7]  # the notification gets no answer
    assert error_response(parse_messages(note, 4096), -32003, "denied", data) is None


@pytest.mark.parametrize("bad_id", [b"1.5", b"true", b"[1]", b'{"a": 1}'])
def test_a_request_id_must_be_a_string_or_an_integer(bad_id: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_messages(b'{"jsonrpc": "2.0", "id": ' + bad_id + b', "method": "ping"}', 4096)


def test_a_header_mismatch_is_answered_in_json_rpc_as_mcp_header_mismatch() -> None:
    with pytest.raises(HeaderMismatch) as mismatch:
        check_headers(request((b"mcp-name", b"echo")), parse_messages(body(READ), 4096))
    assert (mismatch.value.status, mismatch.value.jsonrpc_code) == (400, -32020)
