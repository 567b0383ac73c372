"""Delegation chains (RFC 8693 ``act``) through the real token path: rules on the current actor,
the chain's depth and whether a token is delegated at all; malformed chains are invalid tokens;
the verified chain reaches the upstream as ``X-Enforcer-Act`` and nothing else does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Stack, start_stack
from tests.support import claims, sign

RULES = """
      - id: agents-for-users
        effect: allow
        actors: ["spiffe://corp.example/agents/*"]
        max_delegation_depth: 1
      - id: pinned-issuer-actor
        effect: allow
        actors: [{sub: "spiffe://partner.example/*", iss: "https://partner-sts.example"}]
        max_delegation_depth: 2
        paths: ["/mcp/partner"]
      - id: direct-reads
        effect: allow
        require_delegation: false
        client_ids: [portal]
        methods: [GET]
"""

AGENT = {"sub": "spiffe://corp.example/agents/billing"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("delegation"), rules=RULES)


def call(stack: Stack, path: str = "/mcp/tools", method: str = "GET", **overrides: Any) -> Any:
    stack.upstream.requests.clear()
    token = sign(stack.key, claims(**overrides))
    return stack.client.request(method, path, headers={"authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("name", "overrides", "path", "status", "rule"), [
    ("TX-01-one-agent-for-a-user", {"act": AGENT}, "/mcp/tools", 200, None),
    ("TX-02-second-hop-too-many", {"act": {**AGENT, "act": {"sub": "spiffe://corp.example/agents/orchestrator"}}},
     "/mcp/tools", 403, "no_matching_rule"),
    ("TX-02-prior-actor-grants-nothing", {"act": {"sub": "spiffe://evil.example/x", "act": AGENT}},
     "/mcp/tools", 403, "no_matching_rule"),
    ("TX-06-actor-of-another-domain", {"act": {"sub": "spiffe://corp.example.evil/agents/billing"}},
     "/mcp/tools", 403, "no_matching_rule"),
    ("TX-06-agent-acting-as-itself-is-not-delegated", {"sub": AGENT["sub"], "client_id": AGENT["sub"]},
     "/mcp/tools", 403, "no_matching_rule"),
    ("direct-portal-read", {"client_id": "portal"}, "/mcp/tools", 200, None),
    ("delegated-portal-token-is-not-direct", {"client_id": "portal", "act": {"sub": "someone"}},
     "/mcp/tools", 403, "no_matching_rule"),
    ("actor-issuer-pinned", {"act": {"sub": "spiffe://partner.example/a", "iss": "https://partner-sts.example"}},
     "/mcp/partner", 200, None),
    ("actor-issuer-missing", {"act": {"sub": "spiffe://partner.example/a"}}, "/mcp/partner", 403,
     "no_matching_rule"),
    ("actor-issuer-other", {"act": {"sub": "spiffe://partner.example/a", "iss": "https://evil-sts.example"}},
     "/mcp/partner", 403, "no_matching_rule"),
])
def test_act_rules(stack: Stack, name: str, overrides: dict[str, Any], path: str, status: int,
                   rule: str | None) -> None:
    response = call(stack, path, **overrides)
    assert response.status_code == status, response.text
    if status == 200:
        assert len(stack.upstream.requests) == 1
    else:
        assert response.json()["reason"] == rule and stack.upstream.requests == []


def _chain(depth: int) -> dict[str, Any]:
    act: dict[str, Any] = {"sub": "spiffe://corp.example/agents/a0"}
    for i in range(1, depth):
        act = {"sub": f"spiffe://corp.example/agents/a{i}", "act": act}
    return act


@pytest.mark.parametrize(("name", "act"), [
    ("TX-06-chain-deeper-than-10", _chain(11)),
    ("act-not-an-object", "spiffe://corp.example/agents/billing"),
    ("act-sub-not-a-string", {"sub": ["spiffe://corp.example/agents/billing"]}),
    ("act-sub-empty", {"sub": ""}),
    ("act-iss-not-a-string", {"sub": "spiffe://corp.example/agents/billing", "iss": 7}),
    ("nested-act-malformed", {**AGENT, "act": {"iss": "https://x"}}),
])
def test_a_malformed_chain_is_an_invalid_token(stack: Stack, name: str, act: Any) -> None:
    response = call(stack, act=act)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert stack.upstream.requests == []


def test_a_chain_of_ten_is_accepted_as_a_token(stack: Stack) -> None:
    """Ten actors is the hard cap of a valid token; the rules then decide (here: too deep)."""
    response = call(stack, act=_chain(10))
    assert response.status_code == 403 and response.json()["reason"] == "no_matching_rule"


def test_the_verified_chain_reaches_the_upstream_and_a_forged_header_does_not(stack: Stack) -> None:
    act = {"sub": "spiffe://corp.example/agents/billing", "act": {"sub": "spiffe://corp.example/agents/o"}}
    token = sign(stack.key, claims(act={**act}, scope="tools:read"))
    stack.upstream.requests.clear()
    forged = json.dumps({"sub": "spiffe://corp.example/agents/admin"})
    # the two-hop chain is refused by the rules above, so use the one-hop one to get through
    one_hop = sign(stack.key, claims(act=AGENT))
    response = stack.client.get("/mcp/tools", headers={"authorization": f"Bearer {one_hop}", "x-enforcer-act": forged})
    assert response.status_code == 200
    [received] = stack.upstream.requests
    assert json.loads(received.header("x-enforcer-act") or "") == AGENT
    assert received.header("x-enforcer-act") == json.dumps(AGENT, separators=(",", ":"))
    refused = stack.client.get("/mcp/tools", headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 403


def test_direct_tokens_carry_no_act_header(stack: Stack) -> None:
    response = call(stack, client_id="portal")
    assert response.status_code == 200
    assert stack.upstream.requests[0].header("x-enforcer-act") is None
