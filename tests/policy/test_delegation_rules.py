"""Delegation conditions in the engine (``actors``, ``max_delegation_depth``,
``require_delegation``) and the load errors that keep them meaningful."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from enforcer.context import Principal
from enforcer.policy.engine import Operation, ResourcePolicy, delegation_depth
from enforcer.policy.loader import PolicyLoadError, load_policy
from enforcer.policy.model import Rule
from tests.support import basic_policy

AGENT = "spiffe://corp.example/agents/billing"


def principal(act: dict[str, Any] | None) -> Principal:
    return Principal(issuer_id="test", iss="https://issuer.test", sub="alice", client_id="agent", scopes=frozenset(),
                     jti="j", exp=0, token_hash="0" * 16, act=act)


def decide(rule: dict[str, Any], act: dict[str, Any] | None) -> bool:
    compiled = ResourcePolicy((Rule.model_validate({"id": "r", "effect": "allow", **rule}),))
    return compiled.decide(principal(act), Operation("GET", "/mcp")).allowed


ONE = {"sub": AGENT}
TWO = {"sub": AGENT, "act": {"sub": "spiffe://corp.example/agents/orchestrator"}}


@pytest.mark.parametrize(("rule", "act", "allowed"), [
    ({"actors": ["spiffe://corp.example/agents/*"]}, ONE, True),
    ({"actors": ["spiffe://corp.example/agents/*"]}, None, False),  # no act: no actor to match
    ({"actors": ["spiffe://corp.example/agents/*"]}, {"sub": "x", "act": ONE}, False),  # TX-02: prior actor
    ({"actors": [{"sub": AGENT, "iss": "https://sts.corp.example"}]}, {**ONE, "iss": "https://sts.corp.example"},
     True),
    ({"actors": [{"sub": AGENT, "iss": "https://sts.corp.example"}]}, ONE, False),  # actor without iss
    ({"actors": [{"sub": AGENT}]}, ONE, True),  # {sub} alone: any issuer or none
    ({"max_delegation_depth": 1}, None, True),
    ({"max_delegation_depth": 1}, ONE, True),
    ({"max_delegation_depth": 1}, TWO, False),
    ({"max_delegation_depth": 0}, ONE, False),
    ({"require_delegation": True}, ONE, True),
    ({"require_delegation": True}, None, False),
    ({"require_delegation": False}, None, True),
    ({"require_delegation": False}, ONE, False),
])
def test_TX_02_delegation_conditions(rule: dict[str, Any], act: dict[str, Any] | None, allowed: bool) -> None:
    assert decide(rule, act) is allowed


def test_depth_counts_every_actor_of_the_chain() -> None:
    assert [delegation_depth(a) for a in (None, ONE, TWO)] == [0, 1, 2]


def test_the_trace_names_the_actor_patterns_never_the_actor() -> None:
    rule = Rule.model_validate({"id": "r", "effect": "allow", "actors": ["spiffe://corp.example/agents/*"],
                                "max_delegation_depth": 1})
    (trace,) = ResourcePolicy((rule,)).explain(principal(TWO), Operation("GET", "/mcp")).decision.trace
    details = {c.condition: c.detail for c in trace.conditions}
    assert details == {"max_delegation_depth": "act chain deeper than 1",
                       "actors": "current actor in [spiffe://corp.example/agents/*]"}
    assert AGENT not in str(trace.record())


@pytest.mark.parametrize(("rule", "message"), [
    ("actors: []", "resources[0].rules[0].actors: an empty list matches nothing"),
    ('actors: [""]', "resources[0].rules[0].actors[0]: an empty string is not a valid value"),
    ('actors: [{iss: "https://x"}]', "resources[0].rules[0].actors[0].sub"),
    ("actors: [{sub: a, isss: b}]", "resources[0].rules[0].actors[0].isss: unknown key; did you mean 'iss'?"),
    ("require_delegation: false\n        actors: [a]", "resources[0].rules[0].require_delegation: a direct token"),
    ("require_delegation: false\n        max_delegation_depth: 2", "resources[0].rules[0].require_delegation"),
    ("max_delegation_depth: 11", "resources[0].rules[0].max_delegation_depth: must be less than or equal to 10"),
    ('require_delegation: "yes"', "resources[0].rules[0].require_delegation: expected true or false"),
])
def test_delegation_conditions_that_cannot_work_are_load_errors(tmp_path: Path, rule: str, message: str) -> None:
    rules = f"""
      - id: delegated
        effect: allow
        {rule}
"""
    path = tmp_path / "policy.yaml"
    path.write_text(basic_policy(jwks_line="jwks_file: keys.json", upstream="http://127.0.0.1:9/mcp", rules=rules))
    (tmp_path / "keys.json").write_text('{"keys": []}')
    with pytest.raises(PolicyLoadError) as caught:
        load_policy([path])
    texts = [str(problem) for problem in caught.value.problems]
    assert any(message in text for text in texts), texts
