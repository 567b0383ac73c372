"""Shadow rules (engine docstring): the live decision comes from enforce-mode rules alone, the
shadow decision from every rule, and a ``ShadowResult`` is attached only when the two differ.

Each case is decided twice, traced (``policy explain``) and untraced (the live request path):
both must agree, and the live answer must equal what the enforce-mode rules alone decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from enforcer.context import Decision, ShadowResult
from enforcer.errors import Reason
from enforcer.policy.engine import Operation, ResourcePolicy
from enforcer.policy.model import Resource, Rule
from tests.policy.test_engine import principal


def rule(rule_id: str, effect: str = "allow", mode: str | None = None, **conditions: Any) -> Rule:
    return Rule.model_validate({"id": rule_id, "effect": effect, **({"mode": mode} if mode else {}), **conditions})


ALLOW_AGENTS = rule("allow-agents", client_ids=["agent-*"])
ALLOW_READ = rule("allow-read", scopes=["tools:read"])
DENY_ADMIN = rule("deny-admin", "deny", paths=["/mcp/admin", "/mcp/admin/*"])
SHADOW_DENY_ADMIN = rule("shadow-deny-admin", "deny", "shadow", paths=["/mcp/admin", "/mcp/admin/*"])
SHADOW_DENY_ALL = rule("shadow-deny-all", "deny", "shadow")
SHADOW_ALLOW_ROBOTS = rule("shadow-robots", "allow", "shadow", client_ids=["robot-*"])
SHADOW_STEP_UP = rule("shadow-step-up", "allow", "shadow", scopes=["tools:call", "audit"])
ENFORCE_STEP_UP = rule("step-up", scopes=["tools:call"])


@dataclass(frozen=True)
class Case:
    id: str
    rules: list[Rule]
    live: tuple[bool, Reason, str | None]
    shadow: tuple[str, Reason, str | None] | None  # (result, reason, rule), or None: the same answer
    client_id: str = "agent-42"
    scopes: str = ""
    path: str = "/mcp/tools"
    shadow_resource: bool = False
    shadow_scopes: tuple[str, ...] = ()


ALLOWED, DENIED, GAP, NONE = Reason.ALLOWED, Reason.DENIED_BY_RULE, Reason.INSUFFICIENT_SCOPE, Reason.NO_MATCHING_RULE

CASES = [
    # no shadow rule: nothing to record
    Case("no-shadow-rules", [DENY_ADMIN, ALLOW_AGENTS], (True, ALLOWED, "allow-agents"), None),
    # a shadow deny that would refuse what is allowed today
    Case("shadow-deny-would-deny", [SHADOW_DENY_ADMIN, ALLOW_AGENTS], (True, ALLOWED, "allow-agents"),
         ("would_deny", DENIED, "shadow-deny-admin"), path="/mcp/admin/users"),
    Case("shadow-deny-not-matching", [SHADOW_DENY_ADMIN, ALLOW_AGENTS], (True, ALLOWED, "allow-agents"), None),
    # a shadow allow that would let in what is refused today
    Case("shadow-allow-would-allow", [ALLOW_AGENTS, SHADOW_ALLOW_ROBOTS], (False, NONE, None),
         ("would_allow", ALLOWED, "shadow-robots"), client_id="robot-7"),
    Case("shadow-allow-not-matching", [ALLOW_AGENTS, SHADOW_ALLOW_ROBOTS], (False, NONE, None), None,
         client_id="bot-7"),
    Case("allow-by-another-rule-is-the-same-answer", [rule("shadow-any", mode="shadow"), ALLOW_AGENTS],
         (True, ALLOWED, "allow-agents"), None),
    # an enforce deny still wins over a shadow allow: the answer does not change
    Case("enforce-deny-beats-shadow-allow", [DENY_ADMIN, rule("shadow-any", mode="shadow")],
         (False, DENIED, "deny-admin"), None, path="/mcp/admin"),
    # both deny, but the refusal would be another one
    Case("other-deny-rule-first-in-file-order", [SHADOW_DENY_ALL, DENY_ADMIN], (False, DENIED, "deny-admin"),
         ("would_deny", DENIED, "shadow-deny-all"), path="/mcp/admin"),
    Case("default-deny-would-be-step-up", [SHADOW_STEP_UP], (False, NONE, None),
         ("would_deny", GAP, "shadow-step-up"), shadow_scopes=("tools:call", "audit")),
    Case("step-up-would-be-a-deny", [ENFORCE_STEP_UP, SHADOW_DENY_ALL], (False, GAP, "step-up"),
         ("would_deny", DENIED, "shadow-deny-all")),
    Case("earlier-shadow-scope-gap-changes-the-challenge", [SHADOW_STEP_UP, ENFORCE_STEP_UP],
         (False, GAP, "step-up"), ("would_deny", GAP, "shadow-step-up"), shadow_scopes=("tools:call", "audit")),
    Case("shadow-scope-gap-never-hides-a-live-allow", [SHADOW_STEP_UP, ALLOW_AGENTS],
         (True, ALLOWED, "allow-agents"), None),
    # a resource in shadow mode: authenticated, nothing refused, every rule recorded
    Case("resource-rules-would-allow", [ALLOW_AGENTS], (True, ALLOWED, None), None, shadow_resource=True),
    Case("resource-rules-would-deny", [DENY_ADMIN, ALLOW_AGENTS], (True, ALLOWED, None),
         ("would_deny", DENIED, "deny-admin"), path="/mcp/admin/x", shadow_resource=True),
    Case("resource-default-deny", [ALLOW_AGENTS], (True, ALLOWED, None), ("would_deny", NONE, None),
         client_id="robot-7", shadow_resource=True),
    Case("resource-without-rules", [], (True, ALLOWED, None), ("would_deny", NONE, None), shadow_resource=True),
    Case("resource-step-up", [ALLOW_READ], (True, ALLOWED, None), ("would_deny", GAP, "allow-read"),
         shadow_resource=True, shadow_scopes=("tools:read",)),
    Case("resource-mode-covers-enforce-rules", [rule("deny-all", "deny", "enforce")], (True, ALLOWED, None),
         ("would_deny", DENIED, "deny-all"), shadow_resource=True),
]


def _decisions(case: Case) -> list[Decision]:
    policy = ResourcePolicy(tuple(case.rules), shadow=case.shadow_resource)
    who, op = principal(client_id=case.client_id, scopes=case.scopes), Operation("GET", case.path)
    return [policy.decide(who, op, explain=True), policy.decide(who, op, explain=False)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_shadow(case: Case) -> None:
    for decision in _decisions(case):
        assert (decision.allowed, decision.reason, decision.rule) == case.live
        expected = None if case.shadow is None else ShadowResult(*case.shadow, required_scopes=case.shadow_scopes)
        assert decision.shadow == expected


@pytest.mark.parametrize("case", [c for c in CASES if not c.shadow_resource], ids=lambda c: c.id)
def test_shadow_rules_never_change_the_live_decision(case: Case) -> None:
    enforced = ResourcePolicy(tuple(r for r in case.rules if r.mode == "enforce"))
    alone = enforced.decide(principal(client_id=case.client_id, scopes=case.scopes), Operation("GET", case.path))
    for decision in _decisions(case):
        assert (decision.allowed, decision.reason, decision.rule, decision.required_scopes) == (
            alone.allowed, alone.reason, alone.rule, alone.required_scopes)


def test_shadow_is_decided_when_the_policy_is_compiled() -> None:
    """The flag that keeps resources without shadow rules on the plain path."""
    assert not ResourcePolicy((ALLOW_AGENTS, DENY_ADMIN)).has_shadow
    assert ResourcePolicy((ALLOW_AGENTS, SHADOW_DENY_ADMIN)).has_shadow
    assert ResourcePolicy((), shadow=True).has_shadow
    resource = Resource.model_validate({"id": "r", "resource": "https://r.example.test", "upstream": "http://u",
                                        "issuers": ["corp"], "mode": "shadow",
                                        "rules": [{"id": "a", "effect": "allow"}]})
    compiled = ResourcePolicy.for_resource(resource)
    assert compiled.shadow_resource and [r.shadow for r in compiled.rules] == [True]


def test_trace_marks_shadow_rules_and_the_explanation_keeps_the_full_decision() -> None:
    policy = ResourcePolicy((SHADOW_DENY_ADMIN, ALLOW_AGENTS))
    explanation = policy.explain(principal(), Operation("GET", "/mcp/tools"))
    assert [(t.rule, t.mode, t.matched) for t in explanation.decision.trace] == [
        ("shadow-deny-admin", "shadow", False), ("allow-agents", "enforce", True)]
    assert explanation.decision.shadow is None  # same answer: nothing recorded
    assert explanation.full is not None and (explanation.full.allowed, explanation.full.rule) == (True, "allow-agents")
    assert ResourcePolicy((ALLOW_AGENTS,)).explain(principal(), Operation("GET", "/mcp")).full is None


def test_shadow_result_record_is_the_audit_field() -> None:
    result = ShadowResult("would_deny", Reason.INSUFFICIENT_SCOPE, "step-up", ("tools:call",))
    assert result.record() == {"decision": "would_deny", "rule": "step-up", "reason": "insufficient_scope"}
