"""The authorization decision (DESIGN.md section 3; engine docstring): conditions, deny-overrides,
default deny, insufficient_scope with every scope of the rule, the explain trace, and the
errors a decision turns into.

Rules are built as the loader builds them (``Rule`` models); principals by hand, as the
token verifier would hand them over. STANDARDS.md ids name the requirement a case covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from enforcer.context import Decision, Principal, RuleTrace
from enforcer.errors import AccessDenied, InsufficientScope, Reason
from enforcer.pipeline import raise_for_decision
from enforcer.policy.conditions import GlobSet
from enforcer.policy.engine import Operation, ResourcePolicy
from enforcer.policy.model import Rule


def principal(sub: str = "alice", client_id: str = "agent-42", scopes: str = "") -> Principal:
    return Principal(issuer_id="corp", iss="https://auth.example.test", sub=sub, client_id=client_id,
                     scopes=frozenset(scopes.split()), jti="jti-1", exp=2_000_000_000, token_hash="0123abcd")


def rule(rule_id: str, effect: str = "allow", **conditions: Any) -> Rule:
    return Rule.model_validate({"id": rule_id, "effect": effect, **conditions})


def decide(rules: list[Rule], who: Principal, method: str = "GET", path: str = "/mcp") -> Decision:
    return ResourcePolicy(tuple(rules)).decide(who, Operation(method, path))


# --- one condition at a time -------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    conditions: dict[str, Any]
    who: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    path: str = "/mcp"
    matches: bool = True
    scopes_only: bool = False  # fails on its scopes alone: an allow rule then asks for step-up


CONDITIONS = [
    # no condition: the rule applies to anything
    Case("no-conditions", {}, {"sub": "", "client_id": ""}, "DELETE", "/anything/at/all"),
    # client_ids: whole-value globs, case-sensitive (AT-17: the agent is checked, not only sub)
    Case("client-exact", {"client_ids": ["agent-42"]}),
    Case("client-exact-longer", {"client_ids": ["agent-42"]}, {"client_id": "agent-420"}, matches=False),
    Case("client-exact-prefixed", {"client_ids": ["agent-42"]}, {"client_id": "xagent-42"}, matches=False),
    Case("client-exact-newline", {"client_ids": ["agent-42"]}, {"client_id": "agent-42\n"}, matches=False),
    Case("client-case-sensitive", {"client_ids": ["agent-42"]}, {"client_id": "Agent-42"}, matches=False),
    Case("client-star-suffix", {"client_ids": ["agent-*"]}, {"client_id": "agent-7"}),
    Case("client-star-empty-run", {"client_ids": ["agent-*"]}, {"client_id": "agent-"}),
    Case("client-star-not-prefix", {"client_ids": ["agent-*"]}, {"client_id": "my-agent-7"}, matches=False),
    Case("client-any-of", {"client_ids": ["bot", "agent-42"]}),
    Case("client-none-of", {"client_ids": ["bot", "agent-7"]}, matches=False),
    Case("client-star-only", {"client_ids": ["*"]}, {"client_id": ""}),
    # SPIFFE ids (SV-05, WA-01): `*` spans `/`, the trust domain is literal
    Case("spiffe-agent", {"client_ids": ["spiffe://corp.example/agents/*"]},
         {"client_id": "spiffe://corp.example/agents/build"}),
    Case("spiffe-star-spans-slash", {"client_ids": ["spiffe://corp.example/agents/*"]},
         {"client_id": "spiffe://corp.example/agents/eu/build/runner-1"}),
    Case("spiffe-parent-path", {"client_ids": ["spiffe://corp.example/agents/*"]},
         {"client_id": "spiffe://corp.example/agents"}, matches=False),
    Case("spiffe-sibling-path", {"client_ids": ["spiffe://corp.example/agents/*"]},
         {"client_id": "spiffe://corp.example/agentsX/build"}, matches=False),
    Case("spiffe-lookalike-domain", {"client_ids": ["spiffe://corp.example/agents/*"]},
         {"client_id": "spiffe://corp.example.evil/agents/build"}, matches=False),
    Case("spiffe-other-domain", {"client_ids": ["spiffe://corp.example/agents/*"]},
         {"client_id": "spiffe://other.example/agents/build"}, matches=False),
    # URL-shaped client ids (MCP-25, CM-05): exact string compare, `.` and `?` are literal
    Case("MCP-25-url-client-exact", {"client_ids": ["https://app.example.com/client.json"]},
         {"client_id": "https://app.example.com/client.json"}),
    Case("MCP-25-url-client-dot-literal", {"client_ids": ["https://app.example.com/client.json"]},
         {"client_id": "https://app.example.com/clientXjson"}, matches=False),
    Case("MCP-25-url-client-query", {"client_ids": ["https://app.example.com/client.json"]},
         {"client_id": "https://app.example.com/client.json?x=1"}, matches=False),
    Case("MCP-25-url-client-trailing-slash", {"client_ids": ["https://app.example.com/client.json"]},
         {"client_id": "https://app.example.com/client.json/"}, matches=False),
    Case("MCP-25-url-client-no-normalisation", {"client_ids": ["https://app.example.com/client.json"]},
         {"client_id": "https://APP.example.com/client.json"}, matches=False),
    Case("MCP-25-url-client-origin-glob", {"client_ids": ["https://app.example.com/*"]},
         {"client_id": "https://app.example.com/clients/a.json"}),
    Case("MCP-25-url-client-origin-lookalike", {"client_ids": ["https://app.example.com/*"]},
         {"client_id": "https://app.example.com.evil.test/a.json"}, matches=False),
    # `?` and `[` are literal characters, never wildcards
    Case("question-mark-literal", {"client_ids": ["agent-?"]}, {"client_id": "agent-?"}),
    Case("question-mark-not-wildcard", {"client_ids": ["agent-?"]}, {"client_id": "agent-1"}, matches=False),
    Case("bracket-literal", {"client_ids": ["agent-[0-9]"]}, {"client_id": "agent-[0-9]"}),
    Case("bracket-not-class", {"client_ids": ["agent-[0-9]"]}, {"client_id": "agent-5"}, matches=False),
    Case("regex-chars-literal", {"client_ids": ["a+b|c(d)"]}, {"client_id": "a+b|c(d)"}),
    Case("regex-chars-not-regex", {"client_ids": ["a+b|c(d)"]}, {"client_id": "aab"}, matches=False),
    Case("backslash-literal", {"client_ids": ["a\\d"]}, {"client_id": "a1"}, matches=False),
    # subjects (AT-17: sub alone is not the caller; a rule on sub still checks client_id)
    Case("subject-star", {"subjects": ["*"]}, {"sub": "anyone@example.test"}),
    Case("subject-exact", {"subjects": ["alice"]}),
    Case("subject-other", {"subjects": ["alice"]}, {"sub": "alice2"}, matches=False),
    Case("AT-17-sub-and-client-both-checked", {"subjects": ["alice"], "client_ids": ["agent-*"]},
         {"sub": "alice", "client_id": "evil-app"}, matches=False),
    Case("AT-17-client-named-like-user", {"subjects": ["alice"], "client_ids": ["agent-*"]},
         {"sub": "alice", "client_id": "alice"}, matches=False),
    # scopes: all of them, exact and case-sensitive (AT-06, AT-16)
    Case("AT-16-scopes-all-granted", {"scopes": ["tools:read", "tools:call"]}, {"scopes": "tools:call tools:read"}),
    Case("AT-16-scopes-superset", {"scopes": ["tools:read"]}, {"scopes": "tools:read tools:call admin"}),
    Case("AT-16-scopes-one-missing", {"scopes": ["tools:read", "tools:call"]}, {"scopes": "tools:read"},
         matches=False, scopes_only=True),
    Case("AT-16-scopes-none-granted", {"scopes": ["tools:read"]}, {"scopes": ""}, matches=False, scopes_only=True),
    Case("AT-06-scopes-case-sensitive", {"scopes": ["tools:read"]}, {"scopes": "Tools:Read"},
         matches=False, scopes_only=True),
    Case("scopes-star-is-literal", {"scopes": ["tools:*"]}, {"scopes": "tools:read"}, matches=False, scopes_only=True),
    # methods: exact, upper case
    Case("method-listed", {"methods": ["GET", "HEAD"]}, method="HEAD"),
    Case("method-not-listed", {"methods": ["GET", "HEAD"]}, method="POST", matches=False),
    Case("method-case-sensitive", {"methods": ["GET"]}, method="get", matches=False),
    Case("method-get-implies-head", {"methods": ["GET"]}, method="HEAD"),
    Case("method-head-does-not-imply-get", {"methods": ["HEAD"]}, method="GET", matches=False),
    # paths: `*` spans segments, the rest is literal and whole-path
    Case("path-exact", {"paths": ["/mcp"]}),
    Case("path-exact-trailing-slash", {"paths": ["/mcp"]}, path="/mcp/", matches=False),
    Case("path-star-child", {"paths": ["/mcp/*"]}, path="/mcp/tools"),
    Case("path-star-spans-slash", {"paths": ["/mcp/*"]}, path="/mcp/admin/users/1"),
    Case("path-star-empty", {"paths": ["/mcp/*"]}, path="/mcp/"),
    Case("path-star-not-parent", {"paths": ["/mcp/*"]}, path="/mcp", matches=False),
    Case("path-star-not-sibling", {"paths": ["/mcp/*"]}, path="/mcpx/tools", matches=False),
    Case("path-inner-star", {"paths": ["/mcp/*/read"]}, path="/mcp/a/b/read"),
    Case("path-inner-star-suffix", {"paths": ["/mcp/*/read"]}, path="/mcp/a/read/more", matches=False),
    Case("path-question-literal", {"paths": ["/mcp/?"]}, path="/mcp/a", matches=False),
    Case("path-any", {"paths": ["*"]}, path="/"),
    # everything together
    Case("all-conditions", {"client_ids": ["agent-*"], "subjects": ["alice"], "scopes": ["tools:call"],
                            "methods": ["POST"], "paths": ["/mcp", "/mcp/*"]},
         {"scopes": "tools:call"}, "POST", "/mcp/x"),
]


@pytest.mark.parametrize("case", CONDITIONS, ids=lambda c: c.id)
@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_condition(case: Case, effect: str) -> None:
    decision = decide([rule("r", effect, **case.conditions)], principal(**case.who), case.method, case.path)
    (trace,) = decision.trace
    assert trace.matched is case.matches
    if case.matches:
        assert (decision.allowed, decision.rule) == (effect == "allow", "r")
        assert decision.reason is (Reason.ALLOWED if effect == "allow" else Reason.DENIED_BY_RULE)
    elif case.scopes_only and effect == "allow":
        assert (decision.allowed, decision.reason, decision.rule) == (False, Reason.INSUFFICIENT_SCOPE, "r")
        assert decision.required_scopes == tuple(case.conditions["scopes"])
    else:
        assert (decision.allowed, decision.reason, decision.rule) == (False, Reason.NO_MATCHING_RULE, None)


# --- combining: deny-overrides, first allow, insufficient_scope, default deny --------------------

ADMIN_DENY = rule("block-admin", "deny", paths=["/mcp/admin", "/mcp/admin/*"])
READ = rule("read", "allow", methods=["GET"], scopes=["tools:read"])
CALL = rule("call", "allow", client_ids=["agent-42"], methods=["POST"], scopes=["tools:call", "tools:read"])
ANY_AGENT = rule("any-agent", "allow", client_ids=["agent-*"])
STEP_UP = rule("step-up", "allow", scopes=["tools:call", "files:write", "audit"])
DENY_ADMINS_SCOPE = rule("deny-admin-scope", "deny", scopes=["admin"])
OTHER_CLIENT_SCOPED = rule("other-client", "allow", client_ids=["agent-7"], scopes=["tools:call"])


@dataclass(frozen=True)
class Combo:
    id: str
    rules: list[Rule]
    who: Principal
    method: str
    path: str
    reason: Reason
    rule: str | None
    scopes: tuple[str, ...] = ()


COMBINING = [
    Combo("allow-first-matching", [READ, ANY_AGENT], principal(scopes="tools:read"), "GET", "/mcp",
          Reason.ALLOWED, "read"),
    Combo("allow-later-when-first-fails", [CALL, ANY_AGENT], principal(), "GET", "/mcp", Reason.ALLOWED, "any-agent"),
    Combo("deny-before-allow", [ADMIN_DENY, ANY_AGENT], principal(), "GET", "/mcp/admin/x",
          Reason.DENIED_BY_RULE, "block-admin"),
    Combo("deny-overrides-earlier-allow", [ANY_AGENT, READ, ADMIN_DENY], principal(scopes="tools:read"), "GET",
          "/mcp/admin", Reason.DENIED_BY_RULE, "block-admin"),
    Combo("deny-not-matching-lets-allow", [ADMIN_DENY, ANY_AGENT], principal(), "GET", "/mcp/tools",
          Reason.ALLOWED, "any-agent"),
    Combo("deny-overrides-insufficient-scope", [STEP_UP, ADMIN_DENY], principal(), "GET", "/mcp/admin",
          Reason.DENIED_BY_RULE, "block-admin"),
    Combo("deny-rule-needs-its-scopes-to-apply", [DENY_ADMINS_SCOPE, ANY_AGENT], principal(scopes="tools:read"),
          "GET", "/mcp", Reason.ALLOWED, "any-agent"),
    Combo("deny-rule-with-its-scopes", [ANY_AGENT, DENY_ADMINS_SCOPE], principal(scopes="admin"), "GET", "/mcp",
          Reason.DENIED_BY_RULE, "deny-admin-scope"),
    Combo("deny-failing-on-scopes-is-not-step-up", [DENY_ADMINS_SCOPE], principal(), "GET", "/mcp",
          Reason.NO_MATCHING_RULE, None),
    Combo("default-deny-no-rules", [], principal(), "GET", "/mcp", Reason.NO_MATCHING_RULE, None),
    Combo("default-deny-nothing-matches", [ADMIN_DENY, CALL], principal(client_id="agent-7"), "GET", "/mcp",
          Reason.NO_MATCHING_RULE, None),
    Combo("MCP-19-every-scope-not-only-missing", [STEP_UP], principal(scopes="tools:call audit"), "POST", "/mcp",
          Reason.INSUFFICIENT_SCOPE, "step-up", ("tools:call", "files:write", "audit")),
    Combo("MCP-19-every-scope-none-granted", [STEP_UP], principal(), "POST", "/mcp",
          Reason.INSUFFICIENT_SCOPE, "step-up", ("tools:call", "files:write", "audit")),
    Combo("AT-16-first-scope-gap-rule", [READ, STEP_UP], principal(), "GET", "/mcp",
          Reason.INSUFFICIENT_SCOPE, "read", ("tools:read",)),
    Combo("AT-16-scope-gap-after-non-scope-failure", [CALL, STEP_UP], principal(client_id="agent-7"), "POST", "/mcp",
          Reason.INSUFFICIENT_SCOPE, "step-up", ("tools:call", "files:write", "audit")),
    Combo("later-allow-beats-scope-gap", [STEP_UP, ANY_AGENT], principal(), "POST", "/mcp", Reason.ALLOWED,
          "any-agent"),
    Combo("non-scope-failure-never-step-up", [CALL], principal(client_id="agent-7"), "POST", "/mcp",
          Reason.NO_MATCHING_RULE, None),
    Combo("non-scope-failure-never-step-up-method", [CALL], principal(), "GET", "/mcp", Reason.NO_MATCHING_RULE, None),
    Combo("non-scope-failure-with-scopes-missing-too", [OTHER_CLIENT_SCOPED], principal(), "POST", "/mcp",
          Reason.NO_MATCHING_RULE, None),
    Combo("scope-gap-lists-rule-order", [CALL], principal(scopes="tools:read"), "POST", "/mcp",
          Reason.INSUFFICIENT_SCOPE, "call", ("tools:call", "tools:read")),
]


@pytest.mark.parametrize("case", COMBINING, ids=lambda c: c.id)
def test_combining(case: Combo) -> None:
    decision = decide(case.rules, case.who, case.method, case.path)
    assert decision.allowed is (case.reason is Reason.ALLOWED)
    assert (decision.reason, decision.rule, decision.required_scopes) == (case.reason, case.rule, case.scopes)


@pytest.mark.parametrize("order", [0, 1, 2], ids=["deny-first", "deny-middle", "deny-last"])
def test_deny_overrides_regardless_of_order(order: int) -> None:
    rules = [ANY_AGENT, rule("everyone", "allow")]
    rules.insert(order, ADMIN_DENY)
    decision = decide(rules, principal(), "GET", "/mcp/admin/users")
    assert (decision.allowed, decision.reason, decision.rule) == (False, Reason.DENIED_BY_RULE, "block-admin")


# --- the explain trace ------------------------------------------------------------------------

TRACES = [
    ("allow-evaluates-every-rule", [READ, ANY_AGENT, ADMIN_DENY], principal(scopes="tools:read"), "GET", "/mcp", [
        RuleTrace("read", "allow", True, "all conditions hold"),
        RuleTrace("any-agent", "allow", True, "all conditions hold"),
        RuleTrace("block-admin", "deny", False, "path not in [/mcp/admin, /mcp/admin/*]"),
    ]),
    ("every-rule-traced-after-a-deny", [ANY_AGENT, ADMIN_DENY, READ], principal(), "GET", "/mcp/admin", [
        RuleTrace("any-agent", "allow", True, "all conditions hold"),
        RuleTrace("block-admin", "deny", True, "all conditions hold"),
        RuleTrace("read", "allow", False, "missing scopes [tools:read]"),
    ]),
    ("each-failing-condition", [
        rule("m", methods=["POST"]), rule("c", client_ids=["bot-*"]), rule("s", subjects=["bob"]),
        rule("p", paths=["/api/*"]), rule("sc", scopes=["b", "a", "c"]),
    ], principal(scopes="a"), "GET", "/mcp", [
        RuleTrace("m", "allow", False, "method not in [POST]"),
        RuleTrace("c", "allow", False, "client_id not in [bot-*]"),
        RuleTrace("s", "allow", False, "sub not in [bob]"),
        RuleTrace("p", "allow", False, "path not in [/api/*]"),
        RuleTrace("sc", "allow", False, "missing scopes [b, c]"),
    ]),
    ("detail-names-the-first-failing-condition", [
        rule("all-wrong", "deny", methods=["POST"], client_ids=["bot"], subjects=["bob"], paths=["/x"], scopes=["z"]),
        rule("scopes-last", client_ids=["agent-42"], paths=["/x"], scopes=["z"]),
    ], principal(), "GET", "/mcp", [
        RuleTrace("all-wrong", "deny", False, "method not in [POST]"),
        RuleTrace("scopes-last", "allow", False, "path not in [/x]"),
    ]),
    ("no-rules-empty-trace", [], principal(), "GET", "/mcp", []),
]


@pytest.mark.parametrize(("rules", "who", "method", "path", "expected"), [t[1:] for t in TRACES],
                         ids=[t[0] for t in TRACES])
def test_trace(rules: list[Rule], who: Principal, method: str, path: str, expected: list[RuleTrace]) -> None:
    """One trace per rule, in file order, whatever decided; ``detail`` names the first failing condition."""
    summary = [RuleTrace(t.rule, t.effect, t.matched, t.detail) for t in decide(rules, who, method, path).trace]
    assert summary == expected


def test_trace_lists_every_condition_in_evaluation_order() -> None:
    """Not only the first failure: every condition's result, scopes last."""
    everything = rule("all-wrong", "deny", methods=["POST"], client_ids=["bot"], subjects=["alice"], paths=["/x"],
                      scopes=["z", "a"])
    (trace,) = decide([everything], principal(scopes="a"), "GET", "/mcp").trace
    assert (trace.matched, trace.detail, trace.mode) == (False, "method not in [POST]", "enforce")
    assert [(c.condition, c.holds, c.detail) for c in trace.conditions] == [
        ("methods", False, "method not in [POST]"),
        ("client_ids", False, "client_id not in [bot]"),
        ("subjects", True, "sub in [alice]"),
        ("paths", False, "path not in [/x]"),
        ("scopes", False, "missing scopes [z]"),
    ]
    (granted,) = decide([rule("r", scopes=["b", "a"])], principal(scopes="a b"), "GET", "/mcp").trace
    assert [(c.condition, c.holds, c.detail) for c in granted.conditions] == [("scopes", True, "scopes [b, a] granted")]
    (bare,) = decide([rule("any")], principal(), "GET", "/mcp").trace
    assert (bare.matched, bare.detail, bare.conditions) == (True, "all conditions hold", ())


def test_traced_and_untraced_decisions_agree() -> None:
    """The live path (no trace, stops at the first deny) and the explain path (every condition of
    every rule) run one combining step: same answers over the whole combining table."""
    for case in COMBINING:
        policy = ResourcePolicy(tuple(case.rules))
        traced = policy.decide(case.who, Operation(case.method, case.path))
        untraced = policy.decide(case.who, Operation(case.method, case.path), explain=False)
        assert untraced.trace == () and traced.trace != () or not case.rules
        assert (traced.allowed, traced.reason, traced.rule, traced.required_scopes) == (
            untraced.allowed, untraced.reason, untraced.rule, untraced.required_scopes), case.id


def test_decision_is_reusable_and_stateless() -> None:
    """A compiled policy keeps no state between decisions."""
    policy = ResourcePolicy((STEP_UP, ANY_AGENT))
    first = policy.decide(principal(client_id="bot"), Operation("GET", "/mcp"))
    second = policy.decide(principal(), Operation("GET", "/mcp"))
    third = policy.decide(principal(client_id="bot"), Operation("GET", "/mcp"))
    assert (first.reason, second.reason) == (Reason.INSUFFICIENT_SCOPE, Reason.ALLOWED)
    assert first == third


@pytest.mark.parametrize(("patterns", "value", "matches"), [
    ((), "", False),  # no patterns match nothing, not even the empty string
    ((), "anything", False),
    (("",), "", True),
    (("a*", "*b"), "xb", True),
    (("a*", "*b"), "xa", False),
    (("**",), "a/b", True),
    (("a*c",), "a\nc", True),
])
def test_globset(patterns: tuple[str, ...], value: str, matches: bool) -> None:
    assert GlobSet.compile(patterns).matches(value) is matches


# --- decisions to errors (DESIGN.md section 4; BT-10, MCP-17, MCP-18) ------------------------------

@pytest.mark.parametrize(("decision", "error", "status", "code", "reason", "body"), [
    pytest.param(Decision(False, Reason.INSUFFICIENT_SCOPE, "step-up", required_scopes=("tools:call", "audit")),
                 InsufficientScope, 403, "insufficient_scope", Reason.INSUFFICIENT_SCOPE,
                 {"scope": "tools:call audit"}, id="MCP-18-insufficient-scope"),
    pytest.param(Decision(False, Reason.DENIED_BY_RULE, "block-admin"), AccessDenied, 403, "access_denied",
                 Reason.DENIED_BY_RULE, {"rule": "block-admin"}, id="denied-by-rule-names-rule"),
    pytest.param(Decision(False, Reason.NO_MATCHING_RULE), AccessDenied, 403, "access_denied",
                 Reason.NO_MATCHING_RULE, {}, id="default-deny-without-rule"),
])
def test_raise_for_decision(decision: Decision, error: type[Exception], status: int, code: str, reason: Reason,
                            body: dict[str, str]) -> None:
    with pytest.raises(error) as raised:
        raise_for_decision(decision)
    exc = raised.value
    assert type(exc) is error
    assert (exc.status, exc.error, exc.reason) == (status, code, reason)
    sent = exc.body()
    assert (sent["error"], sent["reason"]) == (code, str(reason))
    assert body.items() <= sent.items()
    if decision.reason is Reason.NO_MATCHING_RULE:
        assert exc.rule is None and "rule" not in sent
    if decision.reason is Reason.DENIED_BY_RULE:
        assert "block-admin" in exc.description


def test_insufficient_scope_challenge_lists_every_scope() -> None:
    """MCP-19 / BT-10: one challenge with the full scope set of the operation, in rule order."""
    decision = decide([STEP_UP], principal(scopes="tools:call"), "POST", "/mcp")
    with pytest.raises(InsufficientScope) as raised:
        raise_for_decision(decision)
    assert raised.value.scopes == ("tools:call", "files:write", "audit")
    assert ("scope", "tools:call files:write audit") in raised.value.challenge_params()
    assert raised.value.challenge_params()[0] == ("error", "insufficient_scope")


def test_allow_raises_nothing() -> None:
    decision = decide([ANY_AGENT], principal())
    assert (decision.allowed, decision.reason, decision.rule, decision.required_scopes) == (
        True, Reason.ALLOWED, "any-agent", ())
    assert raise_for_decision(decision) is None
