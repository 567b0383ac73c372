"""The authorization decision: deny-overrides, then allow, otherwise deny.

Combining algorithm, for the rules of one resource, in file order:

1. A rule *applies* when every condition it states holds; an absent condition holds
   for anything. ``scopes`` is all-of: every listed scope must be granted. ``methods``
   listing GET also covers HEAD (frameworks serve HEAD with the GET handler).
2. If any applying rule has ``effect: deny``, the request is denied by the first such
   rule (``denied_by_rule``, its id in the answer). Deny always wins.
3. Otherwise, if any applying rule has ``effect: allow``, the first one allows.
4. Otherwise, if an allow rule would have applied but for its ``scopes`` condition, the
   answer is ``insufficient_scope`` listing **every** scope that rule requires (the MCP
   step-up rule: one challenge with the full set, not only the missing ones).
5. Otherwise the default: deny with ``no_matching_rule``.

Every evaluation returns a per-rule trace, so ``policy explain`` and debug logs can
say which condition failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from enforcer.context import Decision, Principal, RuleTrace
from enforcer.errors import Reason
from enforcer.policy.conditions import GlobSet
from enforcer.policy.model import Rule


class Operation(NamedTuple):
    """What the caller asks to do, as the engine sees it (decoded path, upper-case method).
    A named tuple rather than a dataclass: one is built per request."""

    method: str
    path: str


Check = Callable[[Principal, Operation], bool]


@dataclass(frozen=True)
class CompiledRule:
    id: str
    deny: bool
    checks: tuple[tuple[str, Check], ...]  # (description, predicate), cheap ones first
    scopes: frozenset[str]
    scope_list: tuple[str, ...]
    allows: Decision  # this rule's allow, built once (the common answer, without a trace)

    @classmethod
    def compile(cls, rule: Rule) -> CompiledRule:
        checks: list[tuple[str, Check]] = []
        if rule.methods is not None:
            # GET implies HEAD: upstream frameworks answer HEAD with the GET handler
            methods = frozenset(rule.methods) | ({"HEAD"} if "GET" in rule.methods else set())
            checks.append((f"method not in [{', '.join(rule.methods)}]", lambda p, op: op.method in methods))
        if rule.client_ids is not None:
            clients = GlobSet.compile(rule.client_ids)
            checks.append((f"client_id not in [{clients}]", lambda p, op: clients.matches(p.client_id)))
        if rule.subjects is not None:
            subjects = GlobSet.compile(rule.subjects)
            checks.append((f"sub not in [{subjects}]", lambda p, op: subjects.matches(p.sub)))
        if rule.paths is not None:
            paths = GlobSet.compile(rule.paths)
            checks.append((f"path not in [{paths}]", lambda p, op: paths.matches(op.path)))
        scopes = tuple(rule.scopes or ())
        allows = Decision(True, Reason.ALLOWED, rule.id)
        return cls(rule.id, rule.effect == "deny", tuple(checks), frozenset(scopes), scopes, allows)

    def evaluate(self, principal: Principal, op: Operation) -> tuple[bool, bool, str]:
        """(conditions other than scopes hold, scopes hold, why not)."""
        for description, check in self.checks:
            if not check(principal, op):
                return False, False, description
        if self.scopes <= principal.scopes:
            return True, True, "all conditions hold"
        return True, False, f"missing scopes [{', '.join(sorted(self.scopes - principal.scopes))}]"


class ResourcePolicy:
    """The compiled rules of one resource."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = tuple(CompiledRule.compile(rule) for rule in rules)

    def decide(self, principal: Principal, op: Operation, *, explain: bool = True) -> Decision:
        """The decision; with ``explain`` it carries one ``RuleTrace`` per rule evaluated (the
        live request path leaves it off: the trace is for ``policy explain`` and debugging)."""
        trace: list[RuleTrace] = []
        first_allow: CompiledRule | None = None
        first_scope_gap: CompiledRule | None = None
        for rule in self.rules:
            others_hold, scopes_hold, detail = rule.evaluate(principal, op)
            applies = others_hold and scopes_hold
            if explain:
                trace.append(RuleTrace(rule.id, "deny" if rule.deny else "allow", applies, detail))
            if not applies:
                if others_hold and not rule.deny and first_scope_gap is None:
                    first_scope_gap = rule
                continue
            if rule.deny:
                return Decision(False, Reason.DENIED_BY_RULE, rule.id, trace=tuple(trace))
            if first_allow is None:
                first_allow = rule
        if first_allow is not None:
            return Decision(True, Reason.ALLOWED, first_allow.id, trace=tuple(trace)) if explain else first_allow.allows
        if first_scope_gap is not None:
            return Decision(False, Reason.INSUFFICIENT_SCOPE, first_scope_gap.id,
                            required_scopes=first_scope_gap.scope_list, trace=tuple(trace))
        return Decision(False, Reason.NO_MATCHING_RULE, trace=tuple(trace))
