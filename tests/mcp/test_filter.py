"""List results filtered down to what the caller may use (``enforcer/mcp/filter.py``).

Each entry of a ``tools``, ``prompts`` or ``resources`` list is judged as the call it offers
(``tools/call`` of its name, ``prompts/get``, ``resources/read`` of its URI) for this caller,
under the resource's compiled rules; entries that would be refused, for any reason, are
removed, and so are entries without a usable name. Only responses are filtered: an object
with a ``method`` is a request or notification and is left alone. The rules and principals
are real ones, built by hand.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import pytest

from enforcer.context import Principal
from enforcer.errors import InvalidUpstreamResponse
from enforcer.mcp import filter as list_filter
from enforcer.mcp.filter import ListFilter
from enforcer.policy.engine import Operation, ResourcePolicy
from enforcer.policy.model import Rule

NOW = 1_760_000_000.0


def principal(client_id: str = "agent-42", scopes: str = "tools:call") -> Principal:
    return Principal(issuer_id="corp", iss="https://auth.example.test", sub="alice", client_id=client_id,
                     scopes=frozenset(scopes.split()), jti="jti-1", exp=2_000_000_000, token_hash="0123abcd")


def rule(rule_id: str, effect: str = "allow", **conditions: Any) -> Rule:
    return Rule.model_validate({"id": rule_id, "effect": effect, **conditions})


RULES = ResourcePolicy((
    rule("deny-delete", "deny", mcp={"tools": ["delete_*"]}),
    rule("tools", mcp={"tools": ["echo", "search_*", "delete_*"]}),
    rule("admin-tools", scopes=["admin"], mcp={"tools": ["admin_*"]}),  # needs a scope the caller lacks
    rule("agent-7-only", client_ids=["agent-7"], mcp={"tools": ["secret"]}),
    rule("expired-grant", not_after="2020-01-01T00:00:00Z", mcp={"tools": ["old_*"]}),
    rule("prompts", mcp={"prompts": ["greet", "summary_*"]}),
    rule("files", mcp={"resources": ["file:///public/*"]}),
))


def make_filter(who: Principal | None = None, rules: ResourcePolicy = RULES) -> ListFilter:
    return ListFilter(rules, who or principal(), Operation("POST", "/mcp", NOW))


def response(result: Any, id_: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def names(*values: Any, field: str = "name") -> list[dict[str, Any]]:
    return [{field: value, "description": f"about {value}"} for value in values]


@dataclass(frozen=True)
class Case:
    id: str
    document: Any
    expected: Any  # the document after filtering
    removed: int


TOOLS = names("echo", "delete_all", "search_web", "admin_reset", "secret", "old_tool", "unknown")
PROMPTS = names("greet", "summary_day", "greeting", "admin")
RESOURCES = names("file:///public/a.txt", "file:///secret/key", "file:///public/b/c.md", field="uri")
NOT_NAMED = [{"name": 7}, {"name": None}, {"title": "echo"}, "echo", ["echo"], None, {"uri": "echo"}]

CASES = [
    Case("tools", response({"tools": TOOLS}), response({"tools": names("echo", "search_web")}), 5),
    Case("tools-with-cursor", response({"tools": TOOLS, "nextCursor": "c2"}),
         response({"tools": names("echo", "search_web"), "nextCursor": "c2"}), 5),
    Case("prompts", response({"prompts": PROMPTS}), response({"prompts": names("greet", "summary_day")}), 2),
    Case("resources", response({"resources": RESOURCES}),
         response({"resources": names("file:///public/a.txt", "file:///public/b/c.md", field="uri")}), 1),
    Case("resources-named-by-name-are-not-usable", response({"resources": names("file:///public/a.txt")}),
         response({"resources": []}), 1),
    Case("entries-without-a-string-name", response({"tools": [*NOT_NAMED, {"name": "echo"}]}),
         response({"tools": [{"name": "echo"}]}), len(NOT_NAMED)),
    Case("everything-removed", response({"tools": names("delete_all", "unknown")}), response({"tools": []}), 2),
    Case("nothing-removed", response({"tools": names("echo", "search_x")}),
         response({"tools": names("echo", "search_x")}), 0),
    Case("empty-list", response({"tools": []}), response({"tools": []}), 0),
    Case("null-list-is-left-alone", response({"tools": None}), response({"tools": None}), 0),
    Case("several-lists-in-one-result", response({"tools": names("echo", "unknown"), "prompts": names("x", "greet")}),
         response({"tools": names("echo"), "prompts": names("greet")}), 2),
    Case("batch-of-responses",
         [response({"tools": names("echo", "delete_all")}, 1), response({"prompts": names("greet", "x")}, 2),
          response({"content": []}, 3)],
         [response({"tools": names("echo")}, 1), response({"prompts": names("greet")}, 2),
          response({"content": []}, 3)], 2),
    # requests and notifications carry a method: never touched, whatever their params or result hold
    Case("request-in-a-batch",
         [{"jsonrpc": "2.0", "id": 9, "method": "tools/list", "result": {"tools": names("delete_all")}},
          response({"tools": names("delete_all", "echo")})],
         [{"jsonrpc": "2.0", "id": 9, "method": "tools/list", "result": {"tools": names("delete_all")}},
          response({"tools": names("echo")})], 1),
    Case("notification", {"jsonrpc": "2.0", "method": "notifications/tools/list_changed",
                          "params": {"tools": names("delete_all")}},
         {"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"tools": names("delete_all")}},
         0),
    Case("server-request-with-result", {"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage",
                                        "result": {"tools": names("delete_all")}},
         {"jsonrpc": "2.0", "id": 1, "method": "sampling/createMessage", "result": {"tools": names("delete_all")}},
         0),
    # responses without a list result
    Case("error-response", {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "tools"}},
         {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "tools"}}, 0),
    Case("result-not-an-object", response(["tools"]), response(["tools"]), 0),
    Case("tool-call-result", response({"content": [{"type": "text", "text": "delete_all"}]}),
         response({"content": [{"type": "text", "text": "delete_all"}]}), 0),
    Case("not-json-rpc-shaped", "tools", "tools", 0),
    Case("batch-of-scalars", [1, "x", None], [1, "x", None], 0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_MCP_13_list_results_hold_only_usable_entries(case: Case) -> None:
    document = copy.deepcopy(case.document)
    f = make_filter()
    changed = f.filter_document(document)
    assert document == case.expected
    assert changed is (case.removed > 0)
    assert f.removed == case.removed


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_MCP_13_rewrite_json(case: Case) -> None:
    body = json.dumps(case.document, indent=1).encode()  # whitespace a re-encoding would not keep
    f = make_filter()
    out = f.rewrite_json(body)
    if case.removed:
        assert json.loads(out) == case.expected
    else:
        assert out is body  # nothing removed: the upstream's own bytes, not a re-encoding
    assert f.removed == case.removed


@pytest.mark.parametrize(("who", "usable"), [
    (principal(), ["echo", "search_web"]),
    (principal(scopes="tools:call admin"), ["echo", "search_web", "admin_reset"]),
    (principal(client_id="agent-7"), ["echo", "search_web", "secret"]),
    (principal(client_id="agent-7", scopes="admin"), ["echo", "search_web", "admin_reset", "secret"]),
], ids=["plain", "with-admin-scope", "agent-7", "agent-7-with-admin-scope"])
def test_MCP_13_entries_are_judged_for_this_caller(who: Principal, usable: list[str]) -> None:
    """A tool the caller could call only after a step-up is hidden, like one it may never call."""
    document = response({"tools": copy.deepcopy(TOOLS)})
    make_filter(who).filter_document(document)
    assert [t["name"] for t in document["result"]["tools"]] == usable


@pytest.mark.parametrize(("method", "name", "usable"), [
    ("tools/call", "echo", True),
    ("tools/call", "delete_all", False),
    ("tools/call", "admin_reset", False),
    ("prompts/get", "greet", True),
    ("prompts/get", "echo", False),
    ("resources/read", "file:///public/x", True),
    ("resources/read", "echo", False),
])
def test_usable(method: str, name: str, usable: bool) -> None:
    assert make_filter().usable(method, name) is usable


def test_entries_are_judged_at_the_operation_s_instant_and_path() -> None:
    rules = ResourcePolicy((rule("window", not_before="2026-01-01T00:00:00Z", paths=["/mcp"],
                                 mcp={"tools": ["echo"]}),))
    before = ListFilter(rules, principal(), Operation("POST", "/mcp", 1_767_225_599.0))
    during = ListFilter(rules, principal(), Operation("POST", "/mcp", 1_767_225_600.0))
    elsewhere = ListFilter(rules, principal(), Operation("POST", "/other", 1_767_225_600.0))
    assert [f.usable("tools/call", "echo") for f in (before, during, elsewhere)] == [False, True, False]


def test_a_resource_in_shadow_mode_hides_nothing() -> None:
    rules = ResourcePolicy((rule("deny-delete", "deny", mcp={"tools": ["delete_*"]}),), shadow=True)
    document = response({"tools": names("delete_all", "echo")})
    assert not make_filter(rules=rules).filter_document(document)
    assert document == response({"tools": names("delete_all", "echo")})


@pytest.mark.parametrize("value", [{"name": "echo"}, "echo", 3, True], ids=["object", "string", "number", "bool"])
@pytest.mark.parametrize("key", ["tools", "prompts", "resources"])
def test_a_list_that_is_not_an_array_is_never_passed_on(key: str, value: Any) -> None:
    f = make_filter()
    with pytest.raises(InvalidUpstreamResponse, match=f"the upstream's {key} list is not an array"):
        f.filter_document(response({key: value}))
    with pytest.raises(InvalidUpstreamResponse):
        f.rewrite_json(json.dumps([response({"tools": []}), response({key: value})]).encode())


def test_removed_counts_every_entry_removed_by_this_filter() -> None:
    f = make_filter()
    f.filter_document(response({"tools": names("unknown", "echo")}))
    f.rewrite_json(json.dumps(response({"prompts": names("x", "y", "greet")})).encode())
    f.rewrite_json(json.dumps(response({"tools": names("echo")})).encode())
    assert f.removed == 3
    assert make_filter().removed == 0


def test_rewritten_json_is_compact_ascii_and_keeps_text_and_order() -> None:
    """Non-ASCII text is written as JSON escapes: the same text for any reader, and a lone
    surrogate the upstream escaped cannot make the rewrite fail."""
    document = response({"tools": [{"name": "echo", "description": "répète « ça »", "inputSchema": {"b": 1, "a": 2}},
                                   {"name": "nope"}], "nextCursor": None})
    out = make_filter().rewrite_json(json.dumps(document, ensure_ascii=False).encode())
    assert out == (b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"r\\u00e9p\\u00e8te '
                   b'\\u00ab \\u00e7a \\u00bb","inputSchema":{"b":1,"a":2}}],"nextCursor":null}}')
    assert json.loads(out)["result"]["tools"][0]["description"] == "répète « ça »"


@pytest.mark.parametrize("body", [
    b"", b"not json", b'{"jsonrpc": "2.0", "id": 1, "result": {"tools": [', b'{"a": "\xff"}', b'{"a": 1} {"b": 2}',
    b'{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}\x00',
], ids=["empty", "text", "truncated", "not-utf8", "two-documents", "trailing-nul"])
def test_invalid_json_is_never_passed_on(body: bytes) -> None:
    with pytest.raises(InvalidUpstreamResponse, match="not valid JSON"):
        make_filter().rewrite_json(body)


def test_a_body_too_large_to_filter_is_never_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps(response({"tools": names("echo")})).encode()
    monkeypatch.setattr(list_filter, "MAX_RESULT_BYTES", len(body))
    assert make_filter().rewrite_json(body) is body  # exactly the limit: read
    with pytest.raises(InvalidUpstreamResponse, match="too large"):
        make_filter().rewrite_json(body + b" ")


def test_default_size_limit() -> None:
    assert list_filter.MAX_RESULT_BYTES == 16 * 1024 * 1024
    assert list_filter.LIST_METHODS == {"tools/list", "prompts/list", "resources/list"}


def test_escaped_lone_surrogate_elsewhere_in_a_filtered_answer() -> None:
    """JSON may spell a lone surrogate as an escape (RFC 8259 section 8.2). When entries are
    removed the answer is re-encoded; the result must be valid UTF-8 JSON, or the answer refused
    as invalid, never an unexpected exception."""
    body = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"\\ud800"},{"name":"nope"}]}}'
    try:
        out = make_filter().rewrite_json(body)
    except InvalidUpstreamResponse:
        return
    assert [t["name"] for t in json.loads(out)["result"]["tools"]] == ["echo"]
