"""Time-boxed rules (``not_before`` / ``not_after``): the window is half open, judged at the
server's clock on live requests and at a case's ``time:`` in ``policy test``, and only instants
with a zone are accepted."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from enforcer.app import EnforcerApp
from enforcer.clock import FrozenClock
from enforcer.context import Principal
from enforcer.errors import Reason
from enforcer.policy.engine import Operation, ResourcePolicy
from enforcer.policy.loader import PolicyLoadError, load_policy
from enforcer.policy.model import Rule
from tests.support import JWKSEndpoint, RecordingUpstream, SigningKey, basic_policy, claims, jwks, serving, sign

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC).timestamp()
END = datetime(2026, 12, 1, 20, 0, tzinfo=UTC).timestamp()
WINDOW_RULE = """
      - id: break-glass
        effect: allow
        client_ids: ["oncall-*"]
        not_before: 2026-12-01T08:00:00Z
        not_after: "2026-12-01T22:00:00+02:00"
"""


def principal() -> Principal:
    return Principal(issuer_id="test", iss="https://issuer.test", sub="svc", client_id="oncall-7",
                     scopes=frozenset(), jti="j", exp=0, token_hash="0" * 16)


@pytest.mark.parametrize(("at", "allowed"), [
    (START - 1, False),
    (START, True),           # not_before is inclusive
    (END - 1, True),
    (END, False),            # not_after is exclusive
    (END + 86400, False),
])
def test_the_window_is_half_open(at: float, allowed: bool) -> None:
    rule = Rule.model_validate({"id": "break-glass", "effect": "allow", "client_ids": ["oncall-*"],
                                "not_before": "2026-12-01T08:00:00Z", "not_after": "2026-12-01T20:00:00Z"})
    decision = ResourcePolicy((rule,)).decide(principal(), Operation("GET", "/db", at))
    assert decision.allowed is allowed
    assert decision.reason is (Reason.ALLOWED if allowed else Reason.NO_MATCHING_RULE)


def test_one_bound_is_enough_and_the_trace_names_the_window() -> None:
    rule = Rule.model_validate({"id": "until", "effect": "allow", "not_after": "2026-12-01T20:00:00Z"})
    compiled = ResourcePolicy((rule,))
    assert compiled.decide(principal(), Operation("GET", "/", 0.0)).allowed
    explanation = compiled.explain(principal(), Operation("GET", "/", END))
    (trace,) = explanation.decision.trace
    (condition,) = trace.conditions
    assert (condition.condition, condition.holds) == ("time", False)
    assert condition.detail == "time outside [..., 2026-12-01T20:00:00+00:00)"


@pytest.mark.parametrize(("value", "message"), [
    ('"2026-12-01T08:00:00"', "must be a date-time with a zone (Z or +01:00)"),
    ("2026-12-01", "must be an RFC 3339 date-time such as 2026-12-01T08:00:00Z, got a date"),
    ('"tomorrow"', "must be an RFC 3339 date-time such as 2026-12-01T08:00:00Z, got the string 'tomorrow'"),
    ("3600", "must be an RFC 3339 date-time such as 2026-12-01T08:00:00Z, got the number 3600"),
])
def test_an_instant_without_a_zone_or_not_a_date_time_is_a_load_error(tmp_path: Path, value: str,
                                                                          message: str) -> None:
    rules = f"""
      - id: boxed
        effect: allow
        client_ids: ["oncall-*"]
        not_after: {value}
"""
    path = tmp_path / "policy.yaml"
    path.write_text(basic_policy(jwks_line="jwks_file: keys.json", upstream="http://127.0.0.1:9/mcp", rules=rules))
    (tmp_path / "keys.json").write_text('{"keys": []}')
    with pytest.raises(PolicyLoadError) as caught:
        load_policy([path])
    texts = [str(problem) for problem in caught.value.problems]
    assert any("resources[0].rules[0].not_after" in text and message in text for text in texts), texts


def test_a_reversed_window_is_a_load_error(tmp_path: Path) -> None:
    rules = WINDOW_RULE.replace("2026-12-01T08:00:00Z", "2026-12-02T08:00:00Z")
    path = tmp_path / "policy.yaml"
    path.write_text(basic_policy(jwks_line="jwks_file: keys.json", upstream="http://127.0.0.1:9/mcp", rules=rules))
    (tmp_path / "keys.json").write_text('{"keys": []}')
    with pytest.raises(PolicyLoadError) as caught:
        load_policy([path])
    assert any("not_before must be earlier than not_after" in str(p) for p in caught.value.problems)


@pytest.mark.parametrize(("at", "status"), [(START - 60, 403), (START + 60, 200), (END + 60, 403)])
def test_live_requests_are_judged_at_the_servers_clock(tmp_path: Path, at: float, status: int) -> None:
    """The window ends at 22:00+02:00, which is 20:00Z: zones are honoured."""
    key = SigningKey.generate("ES256", kid="k1")
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(RecordingUpstream()) as upstream:
        path = tmp_path / "policy.yaml"
        path.write_text(basic_policy(jwks_line=f"jwks_uri: {issuer.url}/jwks", upstream=f"{upstream.url}/mcp",
                                     rules=WINDOW_RULE))
        app = EnforcerApp(load_policy([path]), clock=FrozenClock(at))
        with serving(app) as server:
            token = sign(key, claims(client_id="oncall-7", iat=int(at) - 10, exp=int(at) + 600))
            response = httpx.get(f"{server.url}/mcp/x", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == status, response.text
            if status == 403:
                assert response.json()["reason"] == "no_matching_rule"


def test_a_case_time_without_a_zone_is_a_broken_case_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "keys.json").write_text('{"keys": []}')
    (tmp_path / "policy.yaml").write_text(basic_policy(jwks_line="jwks_file: keys.json",
                                                       upstream="http://127.0.0.1:9/mcp", rules=WINDOW_RULE))
    cases = tmp_path / "policy_test.yaml"
    cases.write_text("cases:\n  - name: naive\n    claims: {iss: https://issuer.test, sub: s, client_id: oncall-1}\n"
                     "    request: {path: /mcp/x, time: '2026-12-01T09:00:00'}\n    expect: {decision: allow}\n")
    enforcer = Path(sys.executable).parent / "enforcer"
    result = subprocess.run([str(enforcer), "policy", "test", str(cases)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{cases}:4:" in result.stderr and "time: must be a date-time with a zone" in result.stderr, result.stderr
