"""``mcp:`` rule conditions (DESIGN.md section 3; engine docstring): each JSON-RPC message is
judged on its own, a name condition holds only for the method that names that kind of target,
a request without a message never satisfies an ``mcp:`` condition, and a batch is allowed only
when every message in it is. Also the load-time checks on ``mcp:`` conditions and on the
resource's ``mcp:`` setting.

Rules are built as the loader builds them (``Rule`` models) or loaded from YAML text; principals
and messages by hand. Every single-message case is decided twice, traced and untraced, and both
answers must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enforcer.context import ConditionResult, Decision, Principal, ShadowResult
from enforcer.errors import Reason
from enforcer.mcp.inspect import JsonRpcMessage
from enforcer.policy.engine import Operation, ResourcePolicy
from enforcer.policy.evaluate import Evaluation, Probe
from enforcer.policy.explain import render_text
from enforcer.policy.loader import check_policy
from enforcer.policy.model import McpCondition, McpOptions, Resource, Rule

ALLOWED, DENIED, GAP, NONE = Reason.ALLOWED, Reason.DENIED_BY_RULE, Reason.INSUFFICIENT_SCOPE, Reason.NO_MATCHING_RULE


def principal(client_id: str = "agent-42", scopes: str = "") -> Principal:
    return Principal(issuer_id="corp", iss="https://auth.example.test", sub="alice", client_id=client_id,
                     scopes=frozenset(scopes.split()), jti="jti-1", exp=2_000_000_000, token_hash="0123abcd")


def rule(rule_id: str, effect: str = "allow", mode: str | None = None, **conditions: Any) -> Rule:
    return Rule.model_validate({"id": rule_id, "effect": effect, **({"mode": mode} if mode else {}), **conditions})


def request(method: str, name: str | None = None) -> JsonRpcMessage:
    return JsonRpcMessage("request", method, name)


def notification(method: str) -> JsonRpcMessage:
    return JsonRpcMessage("notification", method, None)


RESPONSE = JsonRpcMessage("response", None, None)
POST = Operation("POST", "/mcp", 1_760_000_000.0)

ALLOW_TOOLS = rule("allow-tools", mcp={"tools": ["echo", "search_*"]})
ALLOW_PROMPT = rule("allow-prompt", mcp={"prompts": ["greet"]})
ALLOW_FILES = rule("allow-files", mcp={"resources": ["file:///public/*"]})
ALLOW_NOTIFICATIONS = rule("allow-notifications", mcp={"methods": ["notifications/*"]})
ALLOW_TOOLS_CALL = rule("allow-tools-call", mcp={"methods": ["tools/call"]})
ALLOW_ANY_MESSAGE = rule("allow-any-message", mcp={})
ALLOW_ALL = rule("allow-all")
DENY_DELETE = rule("deny-delete", "deny", mcp={"tools": ["delete_*"]})
DENY_LIST = rule("deny-list", "deny", mcp={"methods": ["tools/list"]})
STEP_UP = rule("step-up", scopes=["tools:call", "tools:write"], mcp={"tools": ["write_*"]})
POST_ONLY = rule("post-echo", methods=["POST"], paths=["/mcp"], mcp={"methods": ["tools/call"], "tools": ["echo"]})


@dataclass(frozen=True)
class Case:
    id: str
    rules: list[Rule]
    message: JsonRpcMessage | None
    expected: tuple[bool, Reason, str | None]
    scopes: str = ""
    required_scopes: tuple[str, ...] = ()
    op: Operation = POST


CASES = [
    # mcp.tools: only tools/call of a matching name
    Case("tools-call-exact-name", [ALLOW_TOOLS], request("tools/call", "echo"), (True, ALLOWED, "allow-tools")),
    Case("tools-call-glob-name", [ALLOW_TOOLS], request("tools/call", "search_web"), (True, ALLOWED, "allow-tools")),
    Case("tools-call-other-name", [ALLOW_TOOLS], request("tools/call", "echo2"), (False, NONE, None)),
    Case("tools-call-name-case-sensitive", [ALLOW_TOOLS], request("tools/call", "Echo"), (False, NONE, None)),
    Case("tools-list-is-not-a-tool-call", [ALLOW_TOOLS], request("tools/list"), (False, NONE, None)),
    Case("tools-list-carrying-a-name-is-not-a-tool-call", [ALLOW_TOOLS], request("tools/list", "echo"),
         (False, NONE, None)),
    Case("prompt-with-a-tool-name", [ALLOW_TOOLS], request("prompts/get", "echo"), (False, NONE, None)),
    Case("resource-with-a-tool-name", [ALLOW_TOOLS], request("resources/read", "echo"), (False, NONE, None)),
    Case("tools-call-as-notification", [ALLOW_TOOLS], JsonRpcMessage("notification", "tools/call", "echo"),
         (True, ALLOWED, "allow-tools")),
    # mcp.prompts: only prompts/get
    Case("prompts-get", [ALLOW_PROMPT], request("prompts/get", "greet"), (True, ALLOWED, "allow-prompt")),
    Case("prompts-get-other-name", [ALLOW_PROMPT], request("prompts/get", "greeting"), (False, NONE, None)),
    Case("tool-with-a-prompt-name", [ALLOW_PROMPT], request("tools/call", "greet"), (False, NONE, None)),
    Case("prompts-list", [ALLOW_PROMPT], request("prompts/list"), (False, NONE, None)),
    # mcp.resources: resources/read, subscribe and unsubscribe of a matching URI
    Case("resources-read", [ALLOW_FILES], request("resources/read", "file:///public/a.txt"),
         (True, ALLOWED, "allow-files")),
    Case("resources-subscribe", [ALLOW_FILES], request("resources/subscribe", "file:///public/a/b.txt"),
         (True, ALLOWED, "allow-files")),
    Case("resources-unsubscribe", [ALLOW_FILES], request("resources/unsubscribe", "file:///public/x"),
         (True, ALLOWED, "allow-files")),
    Case("resources-read-other-uri", [ALLOW_FILES], request("resources/read", "file:///secret/a.txt"),
         (False, NONE, None)),
    Case("resources-read-uri-prefix-only", [ALLOW_FILES], request("resources/read", "file:///public"),
         (False, NONE, None)),
    Case("resources-list", [ALLOW_FILES], request("resources/list"), (False, NONE, None)),
    Case("resources-templates-list", [ALLOW_FILES], request("resources/templates/list"), (False, NONE, None)),
    Case("tool-named-like-a-uri", [ALLOW_FILES], request("tools/call", "file:///public/a.txt"), (False, NONE, None)),
    # mcp.methods: globs on the method; a response has no method
    Case("methods-glob-initialized", [ALLOW_NOTIFICATIONS], notification("notifications/initialized"),
         (True, ALLOWED, "allow-notifications")),
    Case("methods-glob-cancelled", [ALLOW_NOTIFICATIONS], notification("notifications/cancelled"),
         (True, ALLOWED, "allow-notifications")),
    Case("methods-glob-other-method", [ALLOW_NOTIFICATIONS], request("tools/call", "echo"), (False, NONE, None)),
    Case("methods-glob-needs-the-whole-method", [ALLOW_NOTIFICATIONS], request("x/notifications/initialized"),
         (False, NONE, None)),
    Case("methods-exact", [ALLOW_TOOLS_CALL], request("tools/call", "anything"), (True, ALLOWED, "allow-tools-call")),
    Case("methods-response-has-no-method", [ALLOW_NOTIFICATIONS], RESPONSE, (False, NONE, None)),
    Case("methods-star-response-has-no-method", [rule("any-method", mcp={"methods": ["*"]})], RESPONSE,
         (False, NONE, None)),
    Case("methods-star-any-request", [rule("any-method", mcp={"methods": ["*"]})], request("ping"),
         (True, ALLOWED, "any-method")),
    # mcp: {} holds for any message, responses too, and never without one
    Case("empty-mcp-request", [ALLOW_ANY_MESSAGE], request("tools/list"), (True, ALLOWED, "allow-any-message")),
    Case("empty-mcp-response", [ALLOW_ANY_MESSAGE], RESPONSE, (True, ALLOWED, "allow-any-message")),
    Case("empty-mcp-without-message", [ALLOW_ANY_MESSAGE], None, (False, NONE, None)),
    Case("empty-mcp-without-message-get-stream", [ALLOW_ANY_MESSAGE], None, (False, NONE, None),
         op=Operation("GET", "/mcp")),
    Case("tools-without-message", [ALLOW_TOOLS], None, (False, NONE, None)),
    Case("methods-without-message", [ALLOW_TOOLS_CALL], None, (False, NONE, None)),
    # mcp conditions together with the HTTP ones
    Case("post-and-mcp", [POST_ONLY], request("tools/call", "echo"), (True, ALLOWED, "post-echo")),
    Case("get-with-a-message", [POST_ONLY], request("tools/call", "echo"), (False, NONE, None),
         op=Operation("GET", "/mcp")),
    Case("other-path", [POST_ONLY], request("tools/call", "echo"), (False, NONE, None),
         op=Operation("POST", "/mcp/other")),
    # deny overrides, whatever the order of the rules
    Case("deny-wins", [ALLOW_ALL, DENY_DELETE], request("tools/call", "delete_all"), (False, DENIED, "deny-delete")),
    Case("deny-wins-over-matching-allow", [rule("allow-delete", mcp={"tools": ["delete_*"]}), DENY_DELETE],
         request("tools/call", "delete_all"), (False, DENIED, "deny-delete")),
    Case("deny-not-for-other-tools", [ALLOW_ALL, DENY_DELETE], request("tools/call", "echo"),
         (True, ALLOWED, "allow-all")),
    Case("deny-tools-not-for-prompts", [ALLOW_ALL, DENY_DELETE], request("prompts/get", "delete_all"),
         (True, ALLOWED, "allow-all")),
    Case("deny-tools-not-without-message", [ALLOW_ALL, DENY_DELETE], None, (True, ALLOWED, "allow-all"),
         op=Operation("GET", "/mcp")),
    Case("deny-method", [DENY_LIST, ALLOW_ANY_MESSAGE], request("tools/list"), (False, DENIED, "deny-list")),
    Case("deny-method-not-for-others", [DENY_LIST, ALLOW_ANY_MESSAGE], request("prompts/list"),
         (True, ALLOWED, "allow-any-message")),
    # scopes and mcp: the step-up answer lists every scope of the rule (MCP-19)
    Case("scopes-missing-one", [STEP_UP], request("tools/call", "write_file"), (False, GAP, "step-up"),
         scopes="tools:call", required_scopes=("tools:call", "tools:write")),
    Case("scopes-missing-all", [STEP_UP], request("tools/call", "write_file"), (False, GAP, "step-up"),
         required_scopes=("tools:call", "tools:write")),
    Case("scopes-granted", [STEP_UP], request("tools/call", "write_file"), (True, ALLOWED, "step-up"),
         scopes="tools:write tools:call"),
    Case("scopes-other-tool-is-no-step-up", [STEP_UP], request("tools/call", "read_file"), (False, NONE, None)),
    Case("scopes-no-step-up-without-message", [STEP_UP], None, (False, NONE, None)),
    Case("scopes-deny-still-wins", [STEP_UP, rule("deny-writes", "deny", mcp={"tools": ["write_*"]})],
         request("tools/call", "write_file"), (False, DENIED, "deny-writes")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_MCP_13_mcp_condition(case: Case) -> None:
    policy = ResourcePolicy(tuple(case.rules))
    op = case.op._replace(message=case.message)
    who = principal(scopes=case.scopes)
    for decision in (policy.decide(who, op, explain=True), policy.decide(who, op, explain=False)):
        assert (decision.allowed, decision.reason, decision.rule) == case.expected
        assert decision.required_scopes == case.required_scopes


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_MCP_13_one_message_decides_like_the_message_alone(case: Case) -> None:
    """``decide_messages`` of one message is the decision on that message."""
    if case.message is None:
        return  # no message: covered by test_no_messages_is_the_plain_decision
    policy = ResourcePolicy(tuple(case.rules))
    decision = policy.decide_messages(principal(scopes=case.scopes), case.op, [case.message], explain=False)
    assert (decision.allowed, decision.reason, decision.rule) == case.expected


# --- batches: each message judged on its own, any refusal refuses the batch ----------------------


@dataclass(frozen=True)
class Batch:
    id: str
    rules: list[Rule]
    messages: list[JsonRpcMessage]
    expected: tuple[bool, Reason, str | None]
    required_scopes: tuple[str, ...] = ()
    scopes: str = ""
    deciding: int = 0  # index of the message whose explanation decides


ECHO, SEARCH = request("tools/call", "echo"), request("tools/call", "search_web")
DELETE, WRITE, UNKNOWN = request("tools/call", "delete_all"), request("tools/call", "write_x"), request("tools/list")
INITIALIZED = notification("notifications/initialized")

BATCHES = [
    Batch("all-allowed-first-message-rule", [ALLOW_TOOLS, ALLOW_NOTIFICATIONS], [INITIALIZED, ECHO],
          (True, ALLOWED, "allow-notifications")),
    Batch("all-allowed-other-order", [ALLOW_TOOLS, ALLOW_NOTIFICATIONS], [ECHO, INITIALIZED],
          (True, ALLOWED, "allow-tools")),
    Batch("all-allowed-same-rule", [ALLOW_TOOLS], [SEARCH, ECHO, SEARCH], (True, ALLOWED, "allow-tools")),
    Batch("denied-last", [DENY_DELETE, ALLOW_TOOLS, ALLOW_ALL], [ECHO, SEARCH, DELETE],
          (False, DENIED, "deny-delete"), deciding=2),
    Batch("denied-first", [DENY_DELETE, ALLOW_ALL], [DELETE, ECHO], (False, DENIED, "deny-delete")),
    Batch("no-rule-for-one", [ALLOW_TOOLS], [ECHO, UNKNOWN], (False, NONE, None), deciding=1),
    Batch("response-without-rule", [ALLOW_TOOLS], [ECHO, RESPONSE], (False, NONE, None), deciding=1),
    Batch("step-up-in-a-batch", [ALLOW_TOOLS, STEP_UP], [ECHO, WRITE], (False, GAP, "step-up"),
          required_scopes=("tools:call", "tools:write"), deciding=1),
    # the first refused message decides, whatever the kind of refusal
    Batch("first-refusal-decides", [ALLOW_TOOLS, STEP_UP, DENY_DELETE], [ECHO, UNKNOWN, WRITE, DELETE],
          (False, NONE, None), deciding=1),
    Batch("first-refusal-step-up-before-deny", [ALLOW_TOOLS, STEP_UP, DENY_DELETE], [WRITE, DELETE],
          (False, GAP, "step-up"), required_scopes=("tools:call", "tools:write")),
    Batch("same-message-twice", [DENY_DELETE, ALLOW_ALL], [DELETE, DELETE], (False, DENIED, "deny-delete")),
]


@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: b.id)
def test_MCP_13_batch_is_refused_when_any_message_is(batch: Batch) -> None:
    policy = ResourcePolicy(tuple(batch.rules))
    who = principal(scopes=batch.scopes)
    for explain in (True, False):
        decision = policy.decide_messages(who, POST, batch.messages, explain=explain)
        assert (decision.allowed, decision.reason, decision.rule) == batch.expected
        assert decision.required_scopes == batch.required_scopes
    explanation = policy.explain_messages(who, POST, batch.messages)
    assert (explanation.decision.allowed, explanation.decision.reason, explanation.decision.rule) == batch.expected
    # the trace is the deciding message's: the same as explaining that message alone
    alone = policy.explain(who, POST._replace(message=batch.messages[batch.deciding]))
    assert explanation.decision.trace == alone.decision.trace


@pytest.mark.parametrize(("rules", "expected"), [
    ([ALLOW_ALL], (True, ALLOWED, "allow-all")),
    ([ALLOW_ANY_MESSAGE], (False, NONE, None)),
    ([DENY_DELETE, ALLOW_ALL], (True, ALLOWED, "allow-all")),
    ([rule("deny-any-message", "deny", mcp={}), ALLOW_ALL], (True, ALLOWED, "allow-all")),
    ([rule("deny-all", "deny"), ALLOW_ANY_MESSAGE], (False, DENIED, "deny-all")),
], ids=["allow-all", "mcp-allow", "mcp-deny-then-allow", "empty-mcp-deny-then-allow", "plain-deny"])
def test_no_messages_is_the_plain_decision(rules: list[Rule], expected: tuple[bool, Reason, str | None]) -> None:
    """A GET stream or DELETE carries no message: the request is decided as it is."""
    policy = ResourcePolicy(tuple(rules))
    op = Operation("GET", "/mcp")
    for explain in (True, False):
        decision = policy.decide_messages(principal(), op, [], explain=explain)
        assert (decision.allowed, decision.reason, decision.rule) == expected
        assert decision == policy.decide(principal(), op, explain=explain)
    assert policy.explain_messages(principal(), op, []) == policy.explain(principal(), op)


# --- shadow rules with mcp conditions ---------------------------------------------------------------

SHADOW_DENY_DELETE = rule("shadow-deny-delete", "deny", "shadow", mcp={"tools": ["delete_*"]})
SHADOW_ALLOW_PROMPT = rule("shadow-allow-prompt", "allow", "shadow", mcp={"prompts": ["greet"]})


@dataclass(frozen=True)
class ShadowCase:
    id: str
    rules: list[Rule]
    messages: list[JsonRpcMessage]
    live: tuple[bool, Reason, str | None]
    shadow: ShadowResult | None
    shadow_resource: bool = False


SHADOW_CASES = [
    ShadowCase("would-deny", [SHADOW_DENY_DELETE, ALLOW_ALL], [DELETE], (True, ALLOWED, "allow-all"),
               ShadowResult("would_deny", DENIED, "shadow-deny-delete")),
    ShadowCase("other-tool-same-answer", [SHADOW_DENY_DELETE, ALLOW_ALL], [ECHO], (True, ALLOWED, "allow-all"), None),
    ShadowCase("prompt-not-a-tool", [SHADOW_DENY_DELETE, ALLOW_ALL], [request("prompts/get", "delete_all")],
               (True, ALLOWED, "allow-all"), None),
    ShadowCase("would-allow", [ALLOW_TOOLS, SHADOW_ALLOW_PROMPT], [request("prompts/get", "greet")],
               (False, NONE, None), ShadowResult("would_allow", ALLOWED, "shadow-allow-prompt")),
    ShadowCase("would-allow-in-a-batch", [ALLOW_TOOLS, SHADOW_ALLOW_PROMPT], [ECHO, request("prompts/get", "greet")],
               (False, NONE, None), ShadowResult("would_allow", ALLOWED, "shadow-allow-prompt")),
    # a batch is refused when any message is: the shadow answer on a batch is the batch's
    ShadowCase("would-deny-the-batch", [SHADOW_DENY_DELETE, ALLOW_ALL], [ECHO, DELETE], (True, ALLOWED, "allow-all"),
               ShadowResult("would_deny", DENIED, "shadow-deny-delete")),
    ShadowCase("shadow-resource-message", [DENY_DELETE, ALLOW_TOOLS], [DELETE], (True, ALLOWED, None),
               ShadowResult("would_deny", DENIED, "deny-delete"), shadow_resource=True),
    ShadowCase("shadow-resource-batch", [DENY_DELETE, ALLOW_TOOLS], [ECHO, DELETE], (True, ALLOWED, None),
               ShadowResult("would_deny", DENIED, "deny-delete"), shadow_resource=True),
]


@pytest.mark.parametrize("case", SHADOW_CASES, ids=lambda c: c.id)
def test_shadow_rules_with_mcp_conditions(case: ShadowCase) -> None:
    policy = ResourcePolicy(tuple(case.rules), shadow=case.shadow_resource)
    for explain in (True, False):
        decision = policy.decide_messages(principal(), POST, case.messages, explain=explain)
        assert (decision.allowed, decision.reason, decision.rule) == case.live
        assert decision.shadow == case.shadow
    assert policy.explain_messages(principal(), POST, case.messages).decision.shadow == case.shadow


# --- the trace ----------------------------------------------------------------------------------------


def test_trace_names_each_mcp_condition_and_its_patterns() -> None:
    policy = ResourcePolicy((DENY_DELETE, POST_ONLY, ALLOW_NOTIFICATIONS))
    explanation = policy.explain_messages(principal(), POST, [ECHO])
    deny, post, notes = explanation.decision.trace
    assert (deny.matched, deny.detail) == (False, "mcp tool not in [delete_*]")
    assert deny.conditions == (ConditionResult("mcp", True, "a JSON-RPC message"),
                               ConditionResult("mcp.tools", False, "mcp tool not in [delete_*]"))
    assert post.matched and [c.condition for c in post.conditions] == ["methods", "paths", "mcp", "mcp.methods",
                                                                      "mcp.tools"]
    assert post.conditions[-2:] == (ConditionResult("mcp.methods", True, "mcp method in [tools/call]"),
                                    ConditionResult("mcp.tools", True, "mcp tool in [echo]"))
    assert (notes.matched, notes.detail) == (False, "mcp method not in [notifications/*]")
    assert notes.record()["conditions"][1] == {"condition": "mcp.methods", "holds": False,
                                               "detail": "mcp method not in [notifications/*]"}


@pytest.mark.parametrize(("condition", "message", "detail"), [
    ({"prompts": ["greet"]}, request("prompts/get", "other"), "mcp prompt not in [greet]"),
    ({"resources": ["file:///public/*"]}, request("resources/read", "file:///x"),
     "mcp resource not in [file:///public/*]"),
    ({"tools": ["a", "b_*"]}, RESPONSE, "mcp tool not in [a, b_*]"),
    ({}, None, "no JSON-RPC message (mcp conditions hold only for POSTed messages)"),
    ({"tools": ["echo"]}, None, "no JSON-RPC message (mcp conditions hold only for POSTed messages)"),
], ids=["prompt", "resource", "response-for-tools", "no-message", "no-message-for-tools"])
def test_trace_says_which_mcp_condition_failed(condition: dict[str, Any], message: JsonRpcMessage | None,
                                                detail: str) -> None:
    policy = ResourcePolicy((rule("r", mcp=condition),))
    [trace] = policy.explain(principal(), POST._replace(message=message)).decision.trace
    assert (trace.matched, trace.detail) == (False, detail)


def test_explain_messages_text_shows_the_deciding_message_and_its_mcp_condition() -> None:
    resource = Resource.model_validate({
        "id": "demo", "resource": "https://mcp.example.test/mcp", "upstream": "http://127.0.0.1:9000/mcp",
        "issuers": ["corp"], "rules": [DENY_DELETE.model_dump(exclude_none=True),
                                       ALLOW_TOOLS.model_dump(exclude_none=True)]})
    policy = ResourcePolicy.for_resource(resource)
    explanation = policy.explain_messages(principal(), POST, [ECHO, DELETE])
    assert explanation.decision.rule == "deny-delete"
    evaluation = Evaluation(probe=Probe("POST", "/mcp"), steps=(), status=403, reason=DENIED, error="access_denied",
                            rule="deny-delete", resource=resource, explanation=explanation, claims={"sub": "alice"})
    text = render_text(evaluation)
    assert "  deny-delete  deny           matched\n" in text
    assert "      ok    mcp.tools: mcp tool in [delete_*]\n" in text
    # the second rule is traced against the deciding message (delete_all), not against echo
    assert "      FAIL  mcp.tools: mcp tool not in [echo, search_*]\n" in text
    assert "deny rule deny-delete matched: deny wins" in text


# --- load-time checks ------------------------------------------------------------------------------


def policy_text(rules: str, mcp: str | None = None) -> str:
    setting = f"    mcp: {mcp}\n" if mcp is not None else ""
    return ("version: 1\n"
            "issuers:\n"
            "  - id: corp\n"
            "    issuer: https://auth.example.test\n"
            "    jwks_uri: https://auth.example.test/jwks\n"
            "resources:\n"
            "  - id: demo\n"
            "    resource: https://mcp.example.test/mcp\n"
            "    match: {path_prefix: /mcp}\n"
            "    upstream: http://127.0.0.1:9000/mcp\n"
            "    issuers: [corp]\n"
            f"{setting}"
            "    rules:\n"
            f"{rules}")


def one_rule(mcp: str, effect: str = "allow") -> str:
    return f"      - id: r\n        effect: {effect}\n        client_ids: [agent-42]\n        mcp: {mcp}\n"


@dataclass(frozen=True)
class Check:
    id: str
    text: str
    problems: list[tuple[str, str, str]]  # (code, field path, words the message contains)


R = "resources[0].rules[0].mcp"
NO_MCP_RULE = "      - id: r\n        effect: allow\n        client_ids: [agent-42]\n"

CHECKS = [
    Check("tools-and-prompts", policy_text(one_rule('{tools: ["delete_*"], prompts: [admin]}', "deny")),
          [("unreachable_condition", f"{R}.prompts", "split tools and prompts into two rules")]),
    Check("tools-and-resources", policy_text(one_rule("{tools: [a], resources: [b]}")),
          [("unreachable_condition", f"{R}.resources", "split tools and resources into two rules")]),
    Check("prompts-and-resources", policy_text(one_rule("{prompts: [a], resources: [b]}")),
          [("unreachable_condition", f"{R}.resources", "split prompts and resources into two rules")]),
    Check("all-three", policy_text(one_rule("{tools: [a], prompts: [b], resources: [c]}")),
          [("unreachable_condition", f"{R}.prompts", "split tools and prompts and resources into two rules")]),
    Check("methods-without-tools-call", policy_text(one_rule("{methods: [tools/list], tools: [echo]}")),
          [("unreachable_condition", f"{R}.methods",
            "tools are named only by tools/call, which these methods do not include")]),
    Check("methods-without-prompts-get", policy_text(one_rule("{methods: [prompts/list], prompts: [a]}")),
          [("unreachable_condition", f"{R}.methods", "prompts are named only by prompts/get")]),
    Check("methods-without-resource-reads", policy_text(one_rule('{methods: ["resources/list"], resources: [a]}')),
          [("unreachable_condition", f"{R}.methods",
            "resources are named only by resources/read, resources/subscribe, resources/unsubscribe")]),
    Check("methods-glob-covers-tools-call", policy_text(one_rule('{methods: ["tools/*"], tools: [echo]}')), []),
    Check("methods-star-covers-tools-call", policy_text(one_rule('{methods: ["*"], tools: [echo]}')), []),
    Check("methods-with-subscribe-only", policy_text(one_rule("{methods: [resources/subscribe], resources: [a]}")),
          []),
    Check("methods-exact-tools-call", policy_text(one_rule("{methods: [tools/list, tools/call], tools: [a]}")), []),
    Check("empty-methods", policy_text(one_rule("{methods: []}")),
          [("invalid_value", f"{R}.methods", "an empty list matches nothing")]),
    Check("empty-tools", policy_text(one_rule("{tools: []}", "deny")),
          [("invalid_value", f"{R}.tools", "an empty list matches nothing")]),
    Check("empty-prompts", policy_text(one_rule("{prompts: []}")),
          [("invalid_value", f"{R}.prompts", "an empty list matches nothing")]),
    Check("empty-resources", policy_text(one_rule("{resources: []}")),
          [("invalid_value", f"{R}.resources", "an empty list matches nothing")]),
    Check("empty-string", policy_text(one_rule('{tools: [echo, ""]}')),
          [("invalid_value", f"{R}.tools[1]", "an empty string is not a valid value")]),
    Check("empty-methods-and-tools", policy_text(one_rule("{methods: [], tools: [echo]}")),
          [("invalid_value", f"{R}.methods", "an empty list matches nothing")]),
    Check("empty-mapping", policy_text(one_rule("{}")), []),
    Check("mcp-false-with-mcp-rules", policy_text(one_rule("{tools: [echo]}"), mcp="false"),
          [("invalid_value", "resources[0].mcp", "remove `mcp: false`")]),
    Check("mcp-false-without-mcp-rules", policy_text(NO_MCP_RULE, mcp="false"), []),
    Check("mcp-true", policy_text(NO_MCP_RULE, mcp="true"), []),
    Check("mcp-true-with-mcp-rules", policy_text(one_rule("{tools: [echo]}"), mcp="true"), []),
    Check("mcp-options", policy_text(NO_MCP_RULE, mcp="{filter_lists: false}"), []),
    Check("mcp-options-ttl-too-short", policy_text(NO_MCP_RULE, mcp="{session_ttl_seconds: 59}"),
          [("invalid_value", "resources[0].mcp.session_ttl_seconds", "greater than or equal to 60")]),
    Check("mcp-options-ttl-too-long", policy_text(NO_MCP_RULE, mcp="{session_ttl_seconds: 2592001}"),
          [("invalid_value", "resources[0].mcp.session_ttl_seconds", "less than or equal to 2592000")]),
    Check("mcp-options-unknown-key", policy_text(NO_MCP_RULE, mcp="{filter_list: false}"),
          [("unknown_key", "resources[0].mcp.filter_list", "did you mean 'filter_lists'?")]),
    Check("mcp-options-not-a-bool", policy_text(NO_MCP_RULE, mcp="{bind_sessions: 'no'}"),
          [("wrong_type", "resources[0].mcp.bind_sessions", "expected true or false, got the string 'no'")]),
    Check("mcp-setting-a-string", policy_text(NO_MCP_RULE, mcp="'yes'"),
          [("wrong_type", "resources[0].mcp", "got the string 'yes'")]),
    Check("rule-mcp-a-bool", policy_text(one_rule("true")), [("wrong_type", R, "expected a mapping, got true")]),
    Check("rule-mcp-unknown-key", policy_text(one_rule("{tool: [echo]}")),
          [("unknown_key", f"{R}.tool", "did you mean 'tools'?")]),
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.id)
def test_mcp_settings_are_checked_when_the_policy_loads(check: Check, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(check.text)
    report = check_policy([path])
    found = [(p.code, p.path) for p in report.errors]
    assert found == [(code, where) for code, where, _ in check.problems], [str(p) for p in report.errors]
    for problem, (_, _, words) in zip(report.errors, check.problems, strict=True):
        assert problem.message.startswith(f"{problem.path}: ")
        assert words in problem.message, str(problem)
    assert (report.policy is None) == bool(check.problems)


@pytest.mark.parametrize(("setting", "rules", "expected"), [
    (None, NO_MCP_RULE, None),
    (None, one_rule("{tools: [echo]}"), McpOptions()),
    (None, one_rule("{}"), McpOptions()),
    ("false", NO_MCP_RULE, None),
    ("true", NO_MCP_RULE, McpOptions()),
    ("true", one_rule("{tools: [echo]}"), McpOptions()),
    ("{}", NO_MCP_RULE, McpOptions()),
    ("{filter_lists: false}", NO_MCP_RULE, McpOptions(filter_lists=False)),
    ("{bind_sessions: false, session_ttl_seconds: 60}", NO_MCP_RULE,
     McpOptions(bind_sessions=False, session_ttl_seconds=60)),
    ("{filter_lists: false}", one_rule("{tools: [echo]}"), McpOptions(filter_lists=False)),
], ids=["absent-plain", "absent-mcp-rule", "absent-empty-mcp-rule", "false", "true", "true-mcp-rule", "empty-options",
        "filter-lists-off", "sessions-off", "options-mcp-rule"])
def test_resource_mcp_options(setting: str | None, rules: str, expected: McpOptions | None, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(rules, mcp=setting))
    report = check_policy([path])
    assert report.errors == () and report.policy is not None, [str(p) for p in report.errors]
    [resource] = report.policy.resources
    assert resource.mcp_options == expected


def test_mcp_options_defaults() -> None:
    options = McpOptions()
    assert (options.filter_lists, options.bind_sessions, options.session_ttl_seconds) == (True, True, 86400)
    assert McpCondition() == McpCondition.model_validate({})
    assert Resource.model_validate({"id": "r", "resource": "https://r.example.test", "upstream": "http://u",
                                    "issuers": ["corp"], "mcp": True}).mcp is True


def test_MCP_19_insufficient_scope_names_every_scope_in_rule_order() -> None:
    """The challenge lists the rule's scopes as written, granted ones included (one challenge)."""
    step_up = rule("step-up", scopes=["tools:write", "audit", "tools:call"], mcp={"tools": ["write_*"]})
    policy = ResourcePolicy((step_up,))
    decision = policy.decide_messages(principal(scopes="audit tools:call"), POST, [WRITE], explain=False)
    assert decision == Decision(False, GAP, "step-up", required_scopes=("tools:write", "audit", "tools:call"))
