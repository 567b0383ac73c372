"""Shadow rules through the real app: the live answers are those of the enforce-mode rules, the
audit record's ``shadow`` field and ``enforcer_shadow_decisions_total`` say what would change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest

from enforcer.app import EnforcerApp
from enforcer.observability.audit import AuditLog
from enforcer.policy.loader import load_policy
from tests.support import (
    ISSUER,
    RESOURCE,
    JWKSEndpoint,
    RecordingUpstream,
    SigningKey,
    claims,
    jwks,
    serving,
    sign,
    wait_for,
    write_policy,
)

LEGACY = "http://127.0.0.1:8080/legacy"


def _policy(jwks_url: str, upstream: str) -> str:
    return f"""version: 1
issuers:
  - id: test
    issuer: {ISSUER}
    jwks_uri: {jwks_url}
    algorithms: [ES256]
resources:
  - id: demo
    resource: {RESOURCE}
    match: {{path_prefix: /mcp}}
    upstream: {upstream}/mcp
    issuers: [test]
    rules:
      - id: shadow-block-admin
        effect: deny
        mode: shadow
        paths: ["/mcp/admin/*"]
      - id: agents
        effect: allow
        client_ids: ["agent-*"]
      - id: shadow-robots
        effect: allow
        mode: shadow
        client_ids: ["robot-*"]
  - id: legacy
    resource: {LEGACY}
    match: {{path_prefix: /legacy}}
    upstream: {upstream}/legacy
    issuers: [test]
    mode: shadow
    rules:
      - id: only-agent-42
        effect: allow
        client_ids: [agent-42]
"""


class _Lines:
    name = "memory"
    batch_size = 100

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def write(self, lines: list[bytes]) -> None:
        self.records += [json.loads(line) for line in lines]

    async def close(self) -> None:
        return None


def _shadow_count(app: EnforcerApp, resource: str, result: str) -> float:
    sample = f'enforcer_shadow_decisions_total{{resource="{resource}",result="{result}"}}'
    for line in generate_latest(app.metrics.registry).decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} is not exported")


def test_shadow_rules_are_recorded_and_never_enforced(tmp_path: Path) -> None:
    key = SigningKey.generate("ES256", kid="k1")
    sink, upstream = _Lines(), RecordingUpstream()
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(upstream) as upstream_server:
        policy = load_policy([write_policy(tmp_path, _policy(f"{issuer.url}/jwks", upstream_server.url))])
        app = EnforcerApp(policy, audit=AuditLog([sink]))
        with serving(app, lifespan="on") as served:
            for resource in ("demo", "legacy"):
                for result in ("would_deny", "would_allow"):
                    assert _shadow_count(app, resource, result) == 0  # pre-initialised

            def get(path: str, audience: str = RESOURCE, **overrides: Any) -> int:
                token = sign(key, claims(aud=audience, **overrides))
                return httpx.get(f"{served.url}{path}", headers={"authorization": f"Bearer {token}"}).status_code

            assert get("/mcp/tools") == 200
            assert get("/mcp/admin/users") == 200  # the shadow deny refuses nothing
            assert get("/mcp/tools", client_id="robot-7") == 403  # the shadow allow admits nobody
            assert get("/legacy/x", LEGACY, client_id="robot-7") == 200  # shadow resource: rules not enforced
            assert httpx.get(f"{served.url}/legacy/x").status_code == 401  # but the token still is
            records = wait_for(lambda: sink.records if len(sink.records) == 5 else None, "five audit records")
            counts = {(r, result): _shadow_count(app, r, result)
                      for r in ("demo", "legacy") for result in ("would_deny", "would_allow")}
    assert [(r["path"], r["decision"], r["rule"], r["reason"], r["shadow"]) for r in records] == [
        ("/mcp/tools", "allow", "agents", "allowed", None),
        ("/mcp/admin/users", "allow", "agents", "allowed",
         {"decision": "would_deny", "rule": "shadow-block-admin", "reason": "denied_by_rule"}),
        ("/mcp/tools", "deny", None, "no_matching_rule",
         {"decision": "would_allow", "rule": "shadow-robots", "reason": "allowed"}),
        ("/legacy/x", "allow", None, "allowed", {"decision": "would_deny", "rule": None, "reason": "no_matching_rule"}),
        ("/legacy/x", "deny", None, "missing_token", None),
    ]
    assert [r.path for r in upstream.requests] == ["/mcp/tools", "/mcp/admin/users", "/legacy/x"]
    assert counts == {("demo", "would_deny"): 1, ("demo", "would_allow"): 1,
                      ("legacy", "would_deny"): 1, ("legacy", "would_allow"): 0}
