"""Workload rules in ``policy test`` and ``policy explain``: a case names the workload identity
its request proves (``request.workload``), taken as verified, as ``claims`` are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

POLICY = """version: 1
issuers:
  - {id: corp, issuer: "https://auth.example.test", jwks_uri: "https://auth.example.test/jwks"}
resources:
  - id: api
    resource: https://api.example.test/api
    match: {path_prefix: /api}
    upstream: http://127.0.0.1:9000/api
    issuers: [corp]
    workload_identity: {mtls: true, required: true}
    rules:
      - id: agents-as-themselves
        effect: allow
        workloads: ["spiffe://corp.example/agents/*"]
        workload_is_client_id: true
"""

CASES = """policy: policy.yaml
fixtures:
  billing: {iss: "https://auth.example.test", sub: alice, client_id: "spiffe://corp.example/agents/billing"}
cases:
  - name: the agent's own certificate
    claims_fixture: billing
    request: {method: GET, path: /api/x, workload: "spiffe://corp.example/agents/billing"}
    expect: {decision: allow, rule: agents-as-themselves}
  - name: another agent's certificate with this token
    claims_fixture: billing
    request: {method: GET, path: /api/x, workload: "spiffe://corp.example/agents/support"}
    expect: {decision: deny, reason: no_matching_rule}
  - name: no certificate at all
    claims_fixture: billing
    request: {method: GET, path: /api/x}
    expect: {decision: deny, status: 401, reason: invalid_workload}
"""


def enforcer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "enforcer.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_cases_name_the_workload_their_request_proves(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "policy_test.yaml").write_text(CASES)
    done = enforcer("policy", "test", str(tmp_path / "policy_test.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 case(s) in 1 file(s): 3 passed, 0 failed" in done.stdout
    broken = CASES.replace('workload: "spiffe://corp.example/agents/support"', "workload: 7")
    (tmp_path / "policy_test.yaml").write_text(broken)
    refused = enforcer("policy", "test", str(tmp_path / "policy_test.yaml"), cwd=tmp_path)
    assert refused.returncode == 2 and "cases[1].request.workload: workload must be" in refused.stderr


def test_explain_takes_the_workload_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "claims.json").write_text(
        '{"iss": "https://auth.example.test", "sub": "alice", "client_id": "spiffe://corp.example/agents/billing"}')
    base = ("policy", "explain", "--policy", "policy.yaml", "--claims", "claims.json", "--method", "GET",
            "--path", "/api/x")
    allowed = enforcer(*base, "--workload", "spiffe://corp.example/agents/billing", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "agents-as-themselves" in allowed.stdout and "taken as verified" in allowed.stdout
    refused = enforcer(*base, cwd=tmp_path)
    assert "invalid_workload" in refused.stdout, refused.stdout
