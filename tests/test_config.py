"""``serving_problem``: settings that cannot serve a policy safely are refused at start and on reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.config import Settings, serving_problem
from enforcer.policy.loader import load_policy

POLICY = """version: 1
issuers:
  - {id: main, issuer: "https://auth.example.com", jwks_uri: "https://auth.example.com/jwks"}
resources:
  - id: tools
    resource: https://mcp.example.com/mcp
    match: {path_prefix: /mcp}
    upstream: http://127.0.0.1:8000/mcp
    issuers: [main]
    MCP_KEY
    rules:
      - {id: anyone, effect: allow, client_ids: ["*"], RULE_MCP}
"""


@pytest.mark.parametrize(("mcp_key", "rule_mcp", "workers", "store", "refused"), [
    ("mcp: true", "", 1, "memory", False),
    ("mcp: true", "", 2, "memory", True),            # a session bound in one worker is unknown to the other
    ("", "mcp: {tools: [echo]}", 2, "memory", True),  # an mcp condition makes the resource MCP
    ("mcp: {bind_sessions: false}", "", 2, "memory", False),
    ("mcp: false", "", 2, "memory", False),
    ("mcp: true", "", 2, "redis://127.0.0.1:6379/0", False),
])
def test_MCP_22_session_bindings_in_several_workers_need_a_shared_store(
        tmp_path: Path, mcp_key: str, rule_mcp: str, workers: int, store: str, refused: bool) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("MCP_KEY", mcp_key).replace(", RULE_MCP", f", {rule_mcp}" if rule_mcp else ""))
    problem = serving_problem(Settings((str(path),), workers=workers, replay_store=store), load_policy([path]))
    if refused:
        assert problem is not None and "MCP resources tools bind sessions" in problem and "redis://" in problem
    else:
        assert problem is None
