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

Shadow rules (``mode: shadow`` on a rule, or on a resource, which makes every rule of it a
shadow rule) are evaluated and recorded, never enforced, so a rule can be watched against
real traffic before it can refuse anyone:

- The *live* decision, the one the request gets, comes from the enforce-mode rules alone,
  by the algorithm above: adding or removing a shadow rule never changes an answer.
- A resource in shadow mode still authenticates every request (the token must verify;
  signatures and body checks apply as configured), but its rules refuse nothing: the live
  decision is allow, reason ``allowed``, with no rule. This is the only way a request is
  allowed without an allow rule, and it has to be asked for by name on the resource.
- The *shadow* decision is what the same algorithm concludes over all the rules, shadow
  and enforce-mode alike, in file order.
- When they differ, the ``Decision`` carries a ``ShadowResult``: ``would_deny`` when the
  shadow decision denies, ``would_allow`` when it allows. They differ when one allows and
  the other denies, or when both deny with another reason or rule (the client would get a
  different refusal). Two allows by different rules do not differ: the client's answer is
  the same. Only differences are recorded, because the question an operator asks before
  switching a rule to ``enforce`` is which requests would change.

Delegation conditions read the verified ``act`` claim (RFC 8693): ``actors`` matches the
current actor only (the top-level ``act``; prior, nested actors are informational and never
grant anything), ``max_delegation_depth`` bounds the length of the chain, and
``require_delegation`` makes a rule apply only to delegated (or only to direct) tokens.

Workload conditions (``workloads``, ``workload_is_client_id``) read ``Principal.workload``, the
SPIFFE ID the workload stage verified (``auth/workload.py``); a request without a workload
identity satisfies neither, so a workload allow rule never lets an unidentified caller in.

An ``mcp:`` condition is judged on one JSON-RPC message (``Operation.message``): the pipeline
asks for a decision per message of a batch and refuses the batch if any message is denied.
A request without a message (a GET stream, DELETE) never satisfies an ``mcp:`` condition,
and neither does a message without the field a key is about (``tools`` holds only for
``tools/call``), so an ``mcp:`` deny rule cannot be sidestepped by another method and an
``mcp:`` allow rule never lets anything else through.

Resources without shadow rules pay nothing for this: ``has_shadow`` is decided when the
policy is compiled, and their live path evaluates the rules exactly once, stopping at the
first applying deny. ``explain`` (``policy explain``, ``policy test``, debug logs) evaluates
every condition of every rule and returns the per-rule trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from enforcer.context import ConditionResult, Decision, Principal, RuleTrace, ShadowResult
from enforcer.errors import Reason
from enforcer.mcp.inspect import TARGET_METHODS, JsonRpcMessage
from enforcer.policy.conditions import GlobSet
from enforcer.policy.model import ActorPattern, McpCondition, Resource, Rule


class Operation(NamedTuple):
    """What the caller asks to do, as the engine sees it (decoded path, upper-case method).
    A named tuple rather than a dataclass: one is built per request."""

    method: str
    path: str
    now: float = 0.0  # seconds since the epoch: the instant time-boxed rules are judged at
    message: JsonRpcMessage | None = None  # the JSON-RPC message judged, on an MCP resource


Check = Callable[[Principal, Operation], bool]
NO_MATCH = Decision(False, Reason.NO_MATCHING_RULE)
#: the live answer of a resource in shadow mode: authenticated, and no rule enforced
UNENFORCED = Decision(True, Reason.ALLOWED)


@dataclass(frozen=True)
class Condition:
    """One compiled condition: the rule key it comes from, its predicate, and the words for
    either result (patterns only: traces reach debug logs, claim values must not)."""

    key: str
    check: Check
    holds: str
    fails: str

    @classmethod
    def of(cls, key: str, subject: str, values: str, check: Check) -> Condition:
        return cls(key, check, f"{subject} in [{values}]", f"{subject} not in [{values}]")

    def result(self, principal: Principal, op: Operation) -> ConditionResult:
        holds = self.check(principal, op)
        return ConditionResult(self.key, holds, self.holds if holds else self.fails)


def _time_window(rule: Rule) -> Condition:
    """``not_before <= now < not_after``, either bound optional."""
    start = rule.not_before.timestamp() if rule.not_before is not None else float("-inf")
    end = rule.not_after.timestamp() if rule.not_after is not None else float("inf")
    window = (f"{rule.not_before.isoformat() if rule.not_before else '...'}, "
              f"{rule.not_after.isoformat() if rule.not_after else '...'})")
    return Condition("time", lambda p, op: start <= op.now < end, f"time within [{window}",
                     f"time outside [{window}")


def delegation_depth(act: Mapping[str, Any] | None) -> int:
    """How many actors an ``act`` chain names (0 for a direct call)."""
    depth = 0
    while isinstance(act, Mapping):
        depth, act = depth + 1, act.get("act")
    return depth


def _delegation_conditions(rule: Rule) -> list[Condition]:
    """``require_delegation``, ``max_delegation_depth`` and ``actors``. Only the current actor
    (the top-level ``act``) can match ``actors`` (RFC 8693 section 4.1: prior actors are
    informational); the claims were checked when the token was verified (``auth/claims.py``)."""
    conditions = []
    if rule.require_delegation is not None:
        wanted = rule.require_delegation
        conditions.append(Condition(
            "require_delegation", lambda p, op: (p.act is not None) is wanted,
            "delegated token" if wanted else "direct token", "direct token" if wanted else "delegated token"))
    if rule.max_delegation_depth is not None:
        most = rule.max_delegation_depth
        conditions.append(Condition("max_delegation_depth", lambda p, op: delegation_depth(p.act) <= most,
                                    f"act chain at most {most} deep", f"act chain deeper than {most}"))
    if rule.actors is not None:
        matchers = [_actor_matcher(item) for item in rule.actors]
        shown = ", ".join(item if isinstance(item, str) else f"{item.sub} (iss {item.iss or '*'})"
                          for item in rule.actors)
        conditions.append(Condition.of("actors", "current actor", shown, lambda p, op: p.act is not None and any(
            matches(p.act) for matches in matchers)))
    return conditions


def _actor_matcher(item: str | ActorPattern) -> Callable[[Mapping[str, Any]], bool]:
    if isinstance(item, str):
        subs = GlobSet.compile([item])
        return lambda act: isinstance(act.get("sub"), str) and subs.matches(act["sub"])
    sub, iss = GlobSet.compile([item.sub]), GlobSet.compile([item.iss]) if item.iss is not None else None

    def matches(act: Mapping[str, Any]) -> bool:
        if not isinstance(act.get("sub"), str) or not sub.matches(act["sub"]):
            return False
        return iss is None or (isinstance(act.get("iss"), str) and iss.matches(act["iss"]))

    return matches


def _workload_conditions(rule: Rule) -> list[Condition]:
    """``workloads`` and ``workload_is_client_id`` over ``Principal.workload`` (the SPIFFE ID the
    workload stage verified); neither holds for a request without a workload identity."""
    conditions = []
    if rule.workloads is not None:
        workloads = GlobSet.compile(rule.workloads)
        conditions.append(Condition.of("workloads", "workload", str(workloads), lambda p, op: (
            p.workload is not None and workloads.matches(p.workload))))
    if rule.workload_is_client_id:
        conditions.append(Condition(
            "workload_is_client_id", lambda p, op: p.workload is not None and p.workload == p.client_id,
            "workload identity is the client_id", "no workload identity, or it is not the client_id"))
    return conditions



def _mcp_conditions(mcp: McpCondition) -> list[Condition]:
    """The ``mcp:`` keys as conditions on ``Operation.message`` (see the module docstring)."""
    conditions = [Condition("mcp", lambda p, op: op.message is not None, "a JSON-RPC message",
                            "no JSON-RPC message (mcp conditions hold only for POSTed messages)")]
    if mcp.methods is not None:
        methods = GlobSet.compile(mcp.methods)
        conditions.append(Condition.of("mcp.methods", "mcp method", str(methods), lambda p, op: (
            op.message is not None and op.message.method is not None and methods.matches(op.message.method))))
    for key in ("tools", "prompts", "resources"):
        patterns = getattr(mcp, key)
        if patterns is not None:
            conditions.append(_target_condition(key, GlobSet.compile(patterns)))
    return conditions


def _target_condition(key: str, names: GlobSet) -> Condition:
    targets = frozenset(TARGET_METHODS[key])

    def check(p: Principal, op: Operation) -> bool:
        message = op.message
        return (message is not None and message.method in targets and message.name is not None
                and names.matches(message.name))

    return Condition.of(f"mcp.{key}", f"mcp {key[:-1]}", str(names), check)


@dataclass(frozen=True)
class CompiledRule:
    id: str
    index: int  # position among the resource's rules (file order)
    deny: bool
    shadow: bool
    conditions: tuple[Condition, ...]  # cheap ones first; scopes are checked after them
    scopes: frozenset[str]
    scope_list: tuple[str, ...]
    decides: Decision  # this rule's allow or deny, built once (the common answers, without a trace)
    needs_scopes: Decision  # this rule's insufficient_scope answer

    @classmethod
    def compile(cls, rule: Rule, index: int = 0, *, shadow: bool = False) -> CompiledRule:
        conditions: list[Condition] = []
        if rule.methods is not None:
            # GET implies HEAD: upstream frameworks answer HEAD with the GET handler
            methods = frozenset(rule.methods) | ({"HEAD"} if "GET" in rule.methods else set())
            conditions.append(Condition.of("methods", "method", ", ".join(rule.methods),
                                           lambda p, op: op.method in methods))
        if rule.client_ids is not None:
            clients = GlobSet.compile(rule.client_ids)
            conditions.append(Condition.of("client_ids", "client_id", str(clients),
                                           lambda p, op: clients.matches(p.client_id)))
        if rule.subjects is not None:
            subjects = GlobSet.compile(rule.subjects)
            conditions.append(Condition.of("subjects", "sub", str(subjects), lambda p, op: subjects.matches(p.sub)))
        if rule.paths is not None:
            paths = GlobSet.compile(rule.paths)
            conditions.append(Condition.of("paths", "path", str(paths), lambda p, op: paths.matches(op.path)))
        if rule.not_before is not None or rule.not_after is not None:
            conditions.append(_time_window(rule))
        conditions.extend(_delegation_conditions(rule))
        conditions.extend(_workload_conditions(rule))
        if rule.mcp is not None:
            conditions.extend(_mcp_conditions(rule.mcp))
        scopes = tuple(rule.scopes or ())
        deny = rule.effect == "deny"
        decides = Decision(False, Reason.DENIED_BY_RULE, rule.id) if deny else Decision(True, Reason.ALLOWED, rule.id)
        needs_scopes = Decision(False, Reason.INSUFFICIENT_SCOPE, rule.id, required_scopes=scopes)
        return cls(rule.id, index, deny, shadow or rule.mode == "shadow", tuple(conditions), frozenset(scopes),
                   scopes, decides, needs_scopes)

    def evaluate(self, principal: Principal, op: Operation) -> tuple[bool, bool]:
        """(conditions other than scopes hold, scopes hold), stopping at the first failure."""
        for condition in self.conditions:
            if not condition.check(principal, op):
                return False, False
        return True, self.scopes <= principal.scopes

    def explain(self, principal: Principal, op: Operation) -> RuleTrace:
        """Every condition's result, none skipped; ``detail`` names the first that failed."""
        results = [condition.result(principal, op) for condition in self.conditions]
        if self.scope_list:
            missing = self.scopes - principal.scopes
            results.append(ConditionResult("scopes", not missing, f"missing scopes [{', '.join(sorted(missing))}]"
                                           if missing else f"scopes [{', '.join(self.scope_list)}] granted"))
        failed = next((result.detail for result in results if not result.holds), None)
        return RuleTrace(self.id, "deny" if self.deny else "allow", failed is None, failed or "all conditions hold",
                         "shadow" if self.shadow else "enforce", tuple(results))


#: per rule, by ``CompiledRule.index``: (its conditions other than scopes hold, its scopes hold)
Results = Sequence[tuple[bool, bool]]


def combine(rules: Iterable[CompiledRule], principal: Principal, op: Operation, results: Results | None = None,
            ) -> Decision:
    """Steps 2 to 5 of the algorithm, over ``rules`` in file order; stops at the first applying
    deny. Each rule is evaluated when reached, unless ``results`` already holds its outcome."""
    first_allow: CompiledRule | None = None
    first_scope_gap: CompiledRule | None = None
    for rule in rules:
        others_hold, scopes_hold = rule.evaluate(principal, op) if results is None else results[rule.index]
        if others_hold and scopes_hold:
            if rule.deny:
                return rule.decides
            if first_allow is None:
                first_allow = rule
        elif others_hold and not rule.deny and first_scope_gap is None:
            first_scope_gap = rule
    if first_allow is not None:
        return first_allow.decides
    if first_scope_gap is not None:
        return first_scope_gap.needs_scopes
    return NO_MATCH


@dataclass(frozen=True)
class Explanation:
    """A fully traced evaluation: the live ``decision`` (with every rule's trace and the
    shadow result, if any) and ``full``, the decision with every rule enforced, shadow ones
    too (None when the resource has no shadow rules)."""

    decision: Decision
    full: Decision | None


class ResourcePolicy:
    """The compiled rules of one resource."""

    def __init__(self, rules: Sequence[Rule], *, shadow: bool = False) -> None:
        self.rules = tuple(CompiledRule.compile(rule, i, shadow=shadow) for i, rule in enumerate(rules))
        self.enforced = tuple(rule for rule in self.rules if not rule.shadow)
        self.shadow_resource = shadow
        #: decided once, here: without shadow rules a request evaluates nothing more than before
        self.has_shadow = shadow or len(self.enforced) != len(self.rules)

    @classmethod
    def for_resource(cls, resource: Resource) -> ResourcePolicy:
        return cls(resource.rules, shadow=resource.mode == "shadow")

    def decide(self, principal: Principal, op: Operation, *, explain: bool = True) -> Decision:
        """The live decision; with ``explain`` it carries one ``RuleTrace`` per rule (the live
        request path leaves it off: the trace is for ``policy explain`` and debugging)."""
        if explain:
            return self.explain(principal, op).decision
        if not self.has_shadow:
            return combine(self.rules, principal, op)
        results = [rule.evaluate(principal, op) for rule in self.rules]
        return with_shadow(self._live(principal, op, results), combine(self.rules, principal, op, results))

    def decide_messages(self, principal: Principal, op: Operation, messages: Sequence[JsonRpcMessage], *,
                        explain: bool = True) -> Decision:
        """The decision on a JSON-RPC body: each message judged on its own (``op`` with that
        message); the first refused message decides, otherwise the first message does. So a
        batch is forwarded only when every message in it is allowed. The shadow result is the
        same choice made over the decisions with every rule enforced. Without messages, ``op``."""
        if not messages:
            return self.decide(principal, op, explain=explain)
        if len(messages) == 1:
            return self.decide(principal, op._replace(message=messages[0]), explain=explain)
        if not self.has_shadow:
            return _deciding(self.decide(principal, op._replace(message=m), explain=explain) for m in messages)
        return _batch([self.decide(principal, op._replace(message=m), explain=explain) for m in messages])

    def explain_messages(self, principal: Principal, op: Operation,
                         messages: Sequence[JsonRpcMessage]) -> Explanation:
        """``explain`` of the message that decides (as ``decide_messages`` chooses it), carrying
        the batch's shadow result."""
        if not messages:
            return self.explain(principal, op)
        explanations = [self.explain(principal, op._replace(message=m)) for m in messages]
        chosen = next((e for e in explanations if not e.decision.allowed), explanations[0])
        if len(explanations) == 1 or not self.has_shadow:
            return chosen
        batch = _batch([e.decision for e in explanations])
        return Explanation(replace(chosen.decision, shadow=batch.shadow), chosen.full)

    def explain(self, principal: Principal, op: Operation) -> Explanation:
        """Every rule and every condition evaluated, with the same combining as ``decide``."""
        traces = tuple(rule.explain(principal, op) for rule in self.rules)
        results = [_holds(trace) for trace in traces]
        live = self._live(principal, op, results)
        full = combine(self.rules, principal, op, results) if self.has_shadow else None
        decision = with_shadow(live, full) if full is not None else live
        return Explanation(replace(decision, trace=traces), full)

    def _live(self, principal: Principal, op: Operation, results: Results) -> Decision:
        if self.shadow_resource:
            return UNENFORCED
        return combine(self.enforced, principal, op, results)


def _deciding(decisions: Iterable[Decision]) -> Decision:
    """The first refusal among ``decisions``, or the first of them when none refuses."""
    first: Decision | None = None
    for decision in decisions:
        if not decision.allowed:
            return decision
        first = first or decision
    assert first is not None
    return first


def _enforced(decision: Decision) -> Decision:
    """What ``decision`` would have been with every shadow rule enforced."""
    shadow = decision.shadow
    if shadow is None:
        return decision
    return Decision(shadow.result == "would_allow", shadow.reason, shadow.rule, shadow.required_scopes)


def _batch(decisions: Sequence[Decision]) -> Decision:
    """The live choice among the messages' decisions (``_deciding``), with the shadow result of
    the same choice among their fully enforced versions: a would-deny of any message is the
    batch's, and a would-allow names the rule that would have allowed the refused message."""
    index = next((i for i, d in enumerate(decisions) if not d.allowed), 0)
    enforced = [_enforced(d) for d in decisions]
    full = next((d for d in enforced if not d.allowed), enforced[index])
    chosen = decisions[index]
    return replace(with_shadow(replace(chosen, shadow=None), full), trace=chosen.trace)


def _holds(trace: RuleTrace) -> tuple[bool, bool]:
    """(conditions other than scopes hold, scopes hold), read back from a trace."""
    others = all(c.holds for c in trace.conditions if c.condition != "scopes")
    return others, all(c.holds for c in trace.conditions if c.condition == "scopes")


def differs(live: Decision, full: Decision) -> bool:
    """Whether enforcing the shadow rules would change what the client is told."""
    if live.allowed != full.allowed:
        return True
    return not live.allowed and (live.reason, live.rule) != (full.reason, full.rule)


def with_shadow(live: Decision, full: Decision) -> Decision:
    """``live``, carrying the shadow result when ``full`` differs from it."""
    if not differs(live, full):
        return live
    result = "would_allow" if full.allowed else "would_deny"
    return replace(live, shadow=ShadowResult(result, full.reason, full.rule, full.required_scopes))
