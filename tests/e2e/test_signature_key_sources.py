"""Agents' signature keys fetched from a ``jwks_uri``, kept like an issuer's (MS-04).

The keys of a ``signatures.keys.jwks_uri`` live in the same cache as issuer keys: fetched at
startup, refetched at most once per interval when an unknown ``keyid`` arrives (so a new agent
key works without a restart, and a stream of made-up keyids cannot hammer the key server), and
reported on ``/readyz``. A key server that is down at startup keeps the enforcer unready and
every signed request refused (fail closed). Refusals are counted under their reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey
from prometheus_client import generate_latest

from enforcer.admin import create_admin_app
from enforcer.signing import HTTPSignatureAuth
from enforcer.signing import SigningKey as AgentKey
from tests.support import (
    JWKSEndpoint,
    RecordingUpstream,
    SigningKey,
    basic_policy,
    claims,
    jwks,
    serve_enforcer,
    serving,
    sign,
)

PUBLIC_ORIGIN = "http://127.0.0.1:8080"  # the origin of tests.support.RESOURCE
BLOCK = """    signatures:
      components: ["@method", "@target-uri", "authorization", "content-digest"]
      keys: {{jwks_uri: {uri}, jwks_refetch_interval_seconds: 1}}"""


def _agent(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def _public_set(*agents: ECKey) -> dict:
    return {"keys": [agent.as_dict(private=False) for agent in agents]}


class Live:
    def __init__(self, app, enforcer, issuer_key, agent_keys: JWKSEndpoint, upstream: RecordingUpstream):  # type: ignore[no-untyped-def]
        self.app, self.enforcer, self.agent_keys, self.upstream = app, enforcer, agent_keys, upstream
        self.token = sign(issuer_key, claims())

    def post(self, agent: ECKey) -> httpx.Response:
        auth = HTTPSignatureAuth(AgentKey.from_jwk(agent.as_dict(private=True)), token=self.token,
                                 public_origin=PUBLIC_ORIGIN)
        return httpx.post(f"{self.enforcer.url}/mcp/tools", json={"q": 1}, auth=auth)

    def count(self, decision: str, reason: str, *, expect: float | None = None) -> float:
        """The counter's value; with ``expect``, waits (up to 2 s) for the server's ``finally``,
        which records a request just after its response was sent."""
        sample = f'enforcer_requests_total{{decision="{decision}",reason="{reason}",resource="demo"}}'
        deadline = time.monotonic() + 2
        while True:
            lines = [line for line in generate_latest(self.app.metrics.registry).decode().splitlines()
                     if line.startswith(sample)]
            if not lines:
                raise AssertionError(f"{sample} is not exported")
            value = float(lines[0].rsplit(" ", 1)[1])
            if expect is None or value == expect or time.monotonic() > deadline:
                return value
            time.sleep(0.02)


def _live(tmp_path: Path, agent_keys: JWKSEndpoint) -> Iterator[Live]:
    issuer_key = SigningKey.generate("ES256", kid="k1")
    upstream = RecordingUpstream()
    rules = """
      - id: agents-call
        effect: allow
        client_ids: ["agent-*"]
"""
    with serving(JWKSEndpoint(document=jwks(issuer_key))) as issuer, serving(agent_keys) as keys, \
            serving(upstream) as upstream_server:
        text = basic_policy(jwks_line=f"jwks_uri: {issuer.url}/jwks", upstream=f"{upstream_server.url}/mcp",
                            rules=rules, extra_resource=BLOCK.format(uri=f"{keys.url}/agents.jwks"))
        with serve_enforcer(tmp_path, text) as (app, enforcer):
            yield Live(app, enforcer, issuer_key, agent_keys, upstream)


@pytest.fixture
def first_agent() -> ECKey:
    return _agent("agent-a")


def test_MS_04_keys_from_jwks_uri_verify_and_a_new_agent_key_is_picked_up(tmp_path: Path, first_agent: ECKey) -> None:
    endpoint = JWKSEndpoint(document=_public_set(first_agent))
    for live in _live(tmp_path, endpoint):
        assert live.post(first_agent).status_code == 200
        time.sleep(1.1)  # past the refetch interval since the startup fetch
        fetches = endpoint.fetches
        newcomer = _agent("agent-b")
        refused = live.post(newcomer)  # not published yet: one refetch, still unknown
        assert refused.status_code == 401 and refused.json()["signature_failure"] == "unknown_key"
        assert endpoint.fetches == fetches + 1
        for _ in range(5):  # made-up or unpublished keyids do not refetch again within the interval
            assert live.post(_agent("agent-x")).status_code == 401
        assert endpoint.fetches == fetches + 1
        endpoint.document = _public_set(first_agent, newcomer)  # the new agent key is published
        time.sleep(1.1)
        assert live.post(newcomer).status_code == 200  # found by one more refetch, no restart
        assert endpoint.fetches == fetches + 2
        assert len(live.upstream.requests) == 2
        assert live.count("deny", "invalid_signature", expect=6) == 6


def test_key_server_down_at_startup_is_unready_and_fails_closed(tmp_path: Path, first_agent: ECKey) -> None:
    endpoint = JWKSEndpoint(document=_public_set(first_agent), status=503)
    for live in _live(tmp_path, endpoint):
        admin = create_admin_app(live.app)
        with serving(admin) as admin_server:
            ready = httpx.get(f"{admin_server.url}/readyz")
        assert ready.status_code == 503
        status = ready.json()["signature_keys"]["demo/signature-keys"]
        assert status["ready"] is False and status["last_error"]
        refused = live.post(first_agent)
        assert refused.status_code == 401 and refused.json()["signature_failure"] == "unknown_key"
        assert live.upstream.requests == []


def test_DG_06_digest_mismatch_is_counted_under_its_own_reason(tmp_path: Path, first_agent: ECKey) -> None:
    endpoint = JWKSEndpoint(document=_public_set(first_agent))
    for live in _live(tmp_path, endpoint):
        assert live.count("deny", "invalid_digest") == 0  # pre-initialised
        signed = live.post(first_agent)
        assert signed.status_code == 200
        request = signed.request
        tampered = httpx.post(f"{live.enforcer.url}/mcp/tools", content=json.dumps({"q": 2}).encode(),
                              headers={k: v for k, v in request.headers.items() if k != "content-length"})
        assert tampered.status_code == 400 and tampered.json()["error"] == "invalid_digest"
        assert live.count("deny", "invalid_digest", expect=1) == 1
        assert len(live.upstream.requests) == 1


def test_MS_signature_headers_travel_with_the_token(tmp_path: Path, first_agent: ECKey) -> None:
    # forward_token is false (the default): the upstream gets neither the token nor the
    # signature over it, but does get the body's Content-Digest.
    endpoint = JWKSEndpoint(document=_public_set(first_agent))
    for live in _live(tmp_path, endpoint):
        assert live.post(first_agent).status_code == 200
        (forwarded,) = live.upstream.requests
        assert forwarded.header("authorization") is None
        assert forwarded.header("signature") is None and forwarded.header("signature-input") is None
        assert forwarded.header("content-digest") is not None
