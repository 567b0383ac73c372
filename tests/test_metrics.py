"""enforcer_requests_total: the decision is the policy's, the reason says what happened next."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client import generate_latest

from tests.support import (
    JWKSEndpoint,
    SigningKey,
    basic_policy,
    claims,
    free_port,
    jwks,
    serve_enforcer,
    serving,
    sign,
)


def _count(app, decision: str, reason: str) -> float:  # type: ignore[no-untyped-def]
    sample = f'enforcer_requests_total{{decision="{decision}",reason="{reason}",resource="demo"}}'
    for line in generate_latest(app.metrics.registry).decode().splitlines():
        if line.startswith(sample):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} is not exported")


def test_allowed_request_whose_upstream_fails_counts_as_allow_with_the_failure_reason(tmp_path: Path) -> None:
    key = SigningKey.generate("ES256", kid="k1")
    closed = free_port()  # nothing listens here
    with serving(JWKSEndpoint(document=jwks(key))) as jwks_server:
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream=f"http://127.0.0.1:{closed}/mcp")
        with serve_enforcer(tmp_path, text) as (app, enforcer):
            assert _count(app, "allow", "upstream_unavailable") == 0  # pre-initialised
            token = sign(key, claims())
            response = httpx.get(f"{enforcer.url}/mcp/tools", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 502 and response.json()["reason"] == "upstream_unavailable"
            denied = httpx.get(f"{enforcer.url}/mcp/tools")
            assert denied.status_code == 401
            assert _count(app, "allow", "upstream_unavailable") == 1
            assert _count(app, "deny", "upstream_unavailable") == 0
            assert _count(app, "deny", "missing_token") == 1
