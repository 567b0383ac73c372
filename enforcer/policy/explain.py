"""How an ``Evaluation`` reads: a per-rule trace for people, or the same as JSON.

``policy explain`` prints it, and ``policy test`` prints it under every failing case, so the
wording of the combining step follows the algorithm of ``policy/engine.py`` step by step.
Claim values appear only in the ``claims`` line (the operator typed them); the rule trace
names patterns of the policy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from enforcer.context import Decision, RuleTrace
from enforcer.errors import Reason
from enforcer.policy.evaluate import Evaluation

#: claims worth showing in the trace (a real token carries more: times, jti, cnf)
_SHOWN_CLAIMS = ("iss", "sub", "client_id", "scope", "aud", "act")
_LABEL = 10


def combining(decision: Decision, *, unenforced: bool = False) -> str:
    """The step of the combining algorithm that produced ``decision``."""
    if unenforced:
        return "the resource is in shadow mode: its rules are not enforced, allow"
    if decision.reason is Reason.DENIED_BY_RULE:
        return f"deny rule {decision.rule} matched: deny wins"
    if decision.reason is Reason.ALLOWED:
        return f"no deny rule matched; first allow rule {decision.rule}: allow"
    if decision.reason is Reason.INSUFFICIENT_SCOPE:
        scopes = ", ".join(decision.required_scopes)
        return f"no rule matched; allow rule {decision.rule} needs scopes [{scopes}]: insufficient_scope"
    return "no rule matched: default deny"


def render_text(evaluation: Evaluation) -> str:
    return "\n".join(_text_lines(evaluation)) + "\n"


def _line(label: str, text: str) -> str:
    return f"{label:<{_LABEL}} {text}"


def _text_lines(evaluation: Evaluation) -> Iterator[str]:
    probe = evaluation.probe
    yield _line("request", f"{probe.method} {probe.path}" + "".join(
        f", {name}: {value}" for name, value in probe.headers if name.lower() in ("host", "mcp-method", "mcp-name")))
    yield _line("claims", _claims_text(evaluation.claims))
    for step in evaluation.steps:
        yield _line(step.stage, step.detail if step.ok else f"FAIL: {step.detail}")
    if evaluation.explanation is not None:
        yield from _rule_lines(evaluation)
    yield _line("decision", _decision_text(evaluation))


def _claims_text(claims: Mapping[str, Any] | None) -> str:
    if claims is None:
        return "none (the request carries no token)"
    shown = [f"{name} {json.dumps(claims[name])}" for name in _SHOWN_CLAIMS if name in claims]
    return ", ".join(shown) or "{}"


def _rule_lines(evaluation: Evaluation) -> Iterator[str]:
    explanation, resource = evaluation.explanation, evaluation.resource
    assert explanation is not None and resource is not None
    traces = explanation.decision.trace
    yield _line("rules", f"of resource {resource.id}, in file order" if traces else f"resource {resource.id} has none")
    width = max((len(trace.rule) for trace in traces), default=0)
    for trace in traces:
        yield from _trace_lines(trace, width)
    unenforced = resource.mode == "shadow"
    live = explanation.decision
    yield _line("combining", ("enforce-mode rules: " if explanation.full is not None and not unenforced else "")
                + combining(live, unenforced=unenforced))
    if explanation.full is None:
        yield _line("shadow", "no shadow rules")
    else:
        verdict = live.shadow.result if live.shadow is not None else "same answer"
        yield _line("shadow", f"{verdict}: all rules: {combining(explanation.full)}")


def _trace_lines(trace: RuleTrace, width: int) -> Iterator[str]:
    kind = trace.effect + (" (shadow)" if trace.mode == "shadow" else "")
    outcome = "matched" if trace.matched else f"no match: {trace.detail}"
    yield f"  {trace.rule:<{width}}  {kind:<14} {outcome}"
    if not trace.conditions:
        yield "      (no conditions: applies to every request)"
    for condition in trace.conditions:
        yield f"      {'ok  ' if condition.holds else 'FAIL'}  {condition.condition}: {condition.detail}"


def _decision_text(evaluation: Evaluation) -> str:
    if evaluation.allowed:
        rule = f", rule {evaluation.rule}" if evaluation.rule else ", no rule (not enforced)"
        return f"allow: {evaluation.status}, forwarded to the upstream{rule}"
    parts = [f"reason {evaluation.reason}"]
    if evaluation.rule:
        parts.append(f"rule {evaluation.rule}")
    if evaluation.scopes:
        parts.append(f"scopes [{', '.join(evaluation.scopes)}]")
    return f"deny: {evaluation.status} {evaluation.error} ({', '.join(parts)})"


def render_json(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation as one JSON document (``--format json``)."""
    explanation, resource = evaluation.explanation, evaluation.resource
    document: dict[str, Any] = {
        "decision": evaluation.decision, "status": evaluation.status, "error": evaluation.error,
        "reason": str(evaluation.reason), "rule": evaluation.rule, "scopes": list(evaluation.scopes),
        "resource": resource.id if resource is not None else None,
        "request": {"method": evaluation.probe.method, "path": evaluation.probe.path},
        "steps": [{"stage": s.stage, "ok": s.ok, "detail": s.detail} for s in evaluation.steps],
        "rules": None, "combining": None, "shadow": None,
    }
    if explanation is None or resource is None:
        return document
    unenforced = resource.mode == "shadow"
    document["rules"] = [trace.record() for trace in explanation.decision.trace]
    document["combining"] = combining(explanation.decision, unenforced=unenforced)
    if explanation.full is not None:
        full, recorded = explanation.full, explanation.decision.shadow
        document["shadow"] = {"decision": "would_allow" if full.allowed else "would_deny",
                              "differs": recorded is not None, "rule": full.rule, "reason": str(full.reason),
                              "scopes": list(full.required_scopes), "combining": combining(full)}
    return document
