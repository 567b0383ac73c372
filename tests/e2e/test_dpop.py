"""DPoP (RFC 9449, STANDARDS.md DP-01..DP-17) through real enforcers on 127.0.0.1.

One enforcer serves four resources in front of a recording upstream:

- ``/mcp``: ``dpop: required`` (the resource of ``tests.support.RESOURCE``);
- ``/open``: ``dpop: allowed`` (Bearer for unbound tokens, DPoP when used);
- ``/plain``: ``dpop: off``;
- ``/nonce``: ``dpop: required`` with ``require_nonce: true``.

Tokens are real RFC 9068 JWTs from an issuer behind a real JWKS endpoint, bound with
``cnf.jkt``; proofs are made by ``tests.auth.test_dpop.Prover``. A proof names the resource's
public URL (``http://127.0.0.1:8080/...``), not the listener the test dials: the enforcer must
take ``htu`` from configuration, never from Host. The refusal table of the unit suite runs here
again, and every refusal is checked for its status, challenge, body and that nothing reached
the upstream. The last tests run two ``enforcer serve`` processes sharing a real Redis: a proof
accepted by one replica is a replay at the other.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.test_dpop import ACCEPTED_CASES, PROOF_CASES, TOKEN_CASES, Call, Kit, Prover
from tests.e2e.test_signature_replay import EnforcerProcess, running_replicas
from tests.support import (
    RESOURCE,
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

PUBLIC = "http://127.0.0.1:8080"  # the origin of every resource identifier below
RESOURCES = {"mcp": RESOURCE, "open": f"{PUBLIC}/open", "plain": f"{PUBLIC}/plain", "nonce": f"{PUBLIC}/nonce"}
ALGS = 'algs="ES256 EdDSA PS256 RS256"'
RULES = """
      - id: allow-agents
        effect: allow
        client_ids: ["agent-*"]
"""


def policy_text(jwks_url: str, upstream: str) -> str:
    """The four resources of the module docstring, every one allowing any agent."""
    text = basic_policy(jwks_line=f"jwks_uri: {jwks_url}", upstream=f"{upstream}/mcp",
                        extra_resource="    dpop: required", rules=RULES)
    for name, mode, options in (("open", "allowed", ""), ("plain", "off", ""),
                                ("nonce", "required", "\n    dpop_options: {require_nonce: true}")):
        text += f"""  - id: {name}
    resource: {RESOURCES[name]}
    match: {{path_prefix: /{name}}}
    upstream: {upstream}/{name}
    issuers: [test]
    dpop: {mode}{options}
    rules:{RULES}"""
    return text


@dataclass
class Env:
    url: str  # the enforcer's listener: what the test dials, never what proofs name
    issuer: SigningKey
    upstream: RecordingUpstream
    prover: Prover
    other: Prover

    def token(self, name: str = "mcp", jkt: str | None = "prover", **extra: Any) -> str:
        """A token for resource ``name``, bound to the prover's key (or ``jkt``; None: unbound)."""
        bound = self.prover.jkt if jkt == "prover" else jkt
        return sign(self.issuer, claims(aud=RESOURCES[name], cnf={"jkt": bound} if bound else None, **extra))

    def kit(self, name: str = "mcp") -> Kit:
        return Kit(self.prover, self.other, self.token(name), lambda jkt: self.token(name, jkt),
                   url=f"{PUBLIC}/{name}/tools", path=f"/{name}/tools")

    def send(self, call: Call, token: str, *, scheme: str = "DPoP", path: str = "/mcp/tools") -> httpx.Response:
        headers = [("authorization", f"{scheme} {token}")] + [("dpop", proof) for proof in call.proofs]
        return httpx.request(call.method, self.url + (call.path or path), headers=headers,
                             content=b'{"marker": "x"}' if call.method == "POST" else None, timeout=10)

    def dpop(self, name: str = "mcp", *, token: str | None = None, method: str = "POST",
             **proof: Any) -> httpx.Response:
        """A well-formed DPoP request to ``/<name>/tools`` (proof arguments may spoil it)."""
        token = token or self.token(name)
        call = Call((self.prover.proof(method, f"{PUBLIC}/{name}/tools", token, **proof),), method=method)
        return self.send(call, token, path=f"/{name}/tools")

    def forwarded(self) -> list[Any]:
        return list(self.upstream.requests)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    issuer = SigningKey.generate("ES256", kid="k1")
    upstream = RecordingUpstream()
    with ExitStack() as stack:
        jwks_server = stack.enter_context(serving(JWKSEndpoint(document=jwks(issuer))))
        upstream_server = stack.enter_context(serving(upstream))
        text = policy_text(f"{jwks_server.url}/jwks", upstream_server.url)
        _, server = stack.enter_context(serve_enforcer(tmp_path_factory.mktemp("dpop"), text))
        yield Env(server.url, issuer, upstream, Prover.generate("ES256"), Prover.generate("ES256"))


@pytest.fixture(autouse=True)
def _clean(env: Env) -> None:
    env.upstream.requests.clear()


def assert_refused(env: Env, response: httpx.Response, error: str, *, scheme: str = "DPoP",
                   failure: str | None = None) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    if failure is not None:
        assert body["dpop_failure"] == failure, body
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'{scheme} error="{error}"'), challenge
    assert ('algs="' in challenge) == (scheme == "DPoP"), challenge
    assert 'resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/' in challenge
    assert env.forwarded() == []
    return body


# -- accepted ---------------------------------------------------------------------------------------


def test_DP_01_dpop_request_is_forwarded_without_token_or_proof(env: Env) -> None:
    response = env.dpop()
    assert response.status_code == 200, response.text
    (seen,) = env.forwarded()
    assert seen.path == "/mcp/tools"
    assert seen.header("authorization") is None and seen.header("dpop") is None
    assert seen.header("x-enforcer-sub") == "alice"


@pytest.mark.parametrize("build", ACCEPTED_CASES)
def test_accepted_proofs(env: Env, build: Callable[[Kit], Call]) -> None:
    kit = env.kit()
    response = env.send(build(kit), kit.token)
    assert response.status_code == 200, response.text
    assert len(env.forwarded()) == 1


def test_DP_09_every_method(env: Env) -> None:
    for method in ("GET", "DELETE", "PUT"):
        response = env.dpop(method=method)
        assert response.status_code == 200, (method, response.text)


# -- refused: every proof check, through the real stack ------------------------------------------


@pytest.mark.parametrize(("build", "failure"), PROOF_CASES)
def test_proof_refusals(env: Env, build: Callable[[Kit], Call], failure: str) -> None:
    kit = env.kit()
    call = build(kit)
    response = env.send(call, call.token or kit.token)
    body = assert_refused(env, response, "invalid_dpop_proof", failure=failure)
    assert body["reason"] == "invalid_dpop_proof"
    for proof in call.proofs:  # the proof is never echoed
        assert all(part not in response.text for part in proof.split(".") if len(part) > 16)


@pytest.mark.parametrize("build", TOKEN_CASES)
def test_token_binding_refusals(env: Env, build: Callable[[Kit], Call]) -> None:
    kit = env.kit()
    call = build(kit)
    assert_refused(env, env.send(call, call.token or kit.token), "invalid_token")


def test_DP_10_htu_of_the_listener_is_refused(env: Env) -> None:
    """The URL the client really dialled (the listener) is not the public URL: a proof for it
    would mean the enforcer trusted Host."""
    response = env.dpop(htu=f"{env.url}/mcp/tools")
    assert_refused(env, response, "invalid_dpop_proof", failure="uri_mismatch")


def test_DP_14_replayed_proof_is_refused(env: Env) -> None:
    token = env.token()
    call = Call((env.prover.proof("POST", f"{PUBLIC}/mcp/tools", token),))
    assert env.send(call, token).status_code == 200
    env.upstream.requests.clear()
    assert_refused(env, env.send(call, token), "invalid_dpop_proof", failure="replayed_proof")


def test_DP_01_invalid_token_on_a_dpop_request_is_challenged_in_dpop(env: Env) -> None:
    token = env.token(exp=1000)  # expired
    call = Call((env.prover.proof("POST", f"{PUBLIC}/open/tools", token),))
    assert_refused(env, env.send(call, token, path="/open/tools"), "invalid_token")


# -- DP-02 and the modes -------------------------------------------------------------------------------


def test_DP_01_no_token_challenges(env: Env) -> None:
    metadata = 'resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/'
    required = httpx.get(f"{env.url}/mcp/tools", timeout=10)
    assert required.status_code == 401
    assert required.headers["www-authenticate"] == f'DPoP {ALGS}, {metadata}mcp", scope="tools:read tools:call"'
    allowed = httpx.get(f"{env.url}/open/tools", timeout=10)
    assert allowed.headers["www-authenticate"] == f'Bearer {metadata}open", DPoP {ALGS}'
    off = httpx.get(f"{env.url}/plain/tools", timeout=10)
    assert off.headers["www-authenticate"] == f'Bearer {metadata}plain"'


def test_DP_02_required_refuses_bearer(env: Env) -> None:
    for token in (env.token(), env.token(jkt=None)):
        response = env.send(Call(()), token, scheme="Bearer")
        body = assert_refused(env, response, "invalid_token")
        assert "DPoP" in body["error_description"]


def test_DP_02_allowed_takes_bearer_for_unbound_tokens_only(env: Env) -> None:
    unbound = env.send(Call(()), env.token("open", jkt=None), scheme="Bearer", path="/open/tools")
    assert unbound.status_code == 200, unbound.text
    env.upstream.requests.clear()
    bound = env.send(Call(()), env.token("open"), scheme="Bearer", path="/open/tools")
    body = assert_refused(env, bound, "invalid_token")
    assert "cnf.jkt" in body["error_description"]


def test_DP_02_allowed_validates_the_dpop_form(env: Env) -> None:
    assert env.dpop("open").status_code == 200
    env.upstream.requests.clear()
    assert_refused(env, env.dpop("open", htm="GET"), "invalid_dpop_proof", failure="method_mismatch")
    unbound = env.token("open", jkt=None)
    assert_refused(env, env.dpop("open", token=unbound), "invalid_token")


def test_DP_02_off_refuses_dpop_and_bound_bearer_tokens(env: Env) -> None:
    dpop = env.dpop("plain")
    assert dpop.status_code == 401 and dpop.json()["error"] == "missing_token"
    assert dpop.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    bound = env.send(Call(()), env.token("plain"), scheme="Bearer", path="/plain/tools")
    assert_refused(env, bound, "invalid_token", scheme="Bearer")
    stray = Call((env.prover.proof("POST", f"{PUBLIC}/plain/tools", None),))
    response = env.send(stray, env.token("plain", jkt=None), scheme="Bearer", path="/plain/tools")
    assert response.status_code == 200, response.text
    assert env.forwarded()[0].header("dpop") is None  # a stray proof is a credential too: not forwarded


def test_DP_17_metadata(env: Env) -> None:
    documents = {name: httpx.get(f"{env.url}/.well-known/oauth-protected-resource/{name}", timeout=10).json()
                 for name in RESOURCES}
    assert documents["mcp"]["dpop_bound_access_tokens_required"] is True
    assert documents["mcp"]["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "PS256", "RS256"]
    assert documents["open"]["dpop_bound_access_tokens_required"] is False
    assert "dpop_signing_alg_values_supported" in documents["open"]
    assert not {k for k in documents["plain"] if k.startswith("dpop")}


# -- DP-11 / DP-15: nonces -------------------------------------------------------------------------------


def test_DP_15_nonce_round_trip(env: Env) -> None:
    first = env.dpop("nonce")
    assert first.status_code == 401, first.text
    assert first.json()["error"] == "use_dpop_nonce"
    assert first.headers["www-authenticate"].startswith('DPoP error="use_dpop_nonce", error_description="')
    assert first.headers["cache-control"] == "no-store"
    nonce = first.headers["dpop-nonce"]
    assert env.forwarded() == []
    second = env.dpop("nonce", nonce=nonce)
    assert second.status_code == 200, second.text
    wrong = env.dpop("nonce", nonce="A" * 32)
    assert wrong.status_code == 401 and wrong.json()["error"] == "use_dpop_nonce"
    assert wrong.headers["dpop-nonce"] == nonce  # same window: the same nonce again


# -- replicas: jti replay and nonces across two processes ------------------------------------------------


@dataclass
class ReplicaWorld:
    directory: Path
    policy: Path
    issuer: SigningKey
    upstream: RecordingUpstream
    prover: Prover

    def request(self, name: str = "mcp") -> tuple[str, str, str]:
        """A token, a proof for ``POST /<name>/tools`` and the marker of its body."""
        token = sign(self.issuer, claims(aud=RESOURCES[name], cnf={"jkt": self.prover.jkt}))
        return token, self.prover.proof("POST", f"{PUBLIC}/{name}/tools", token), uuid.uuid4().hex

    def forwarded(self, marker: str) -> int:
        return sum(1 for r in self.upstream.requests if marker.encode() in r.body)

    def replicas(self, replay_store: str | None, count: int = 2) -> ContextManager[list[EnforcerProcess]]:
        """``count`` ``enforcer serve`` processes with this policy."""
        return running_replicas(self.directory, self.policy, replay_store, count)


def post(replica: EnforcerProcess, token: str, proof: str, marker: str, name: str = "mcp") -> httpx.Response:
    return httpx.post(f"{replica.url}/{name}/tools", headers={"authorization": f"DPoP {token}", "dpop": proof},
                      content=json.dumps({"marker": marker}).encode(), timeout=10)


@pytest.fixture
def replica_world(tmp_path: Path) -> Iterator[ReplicaWorld]:
    issuer = SigningKey.generate("ES256", kid="k1")
    upstream = RecordingUpstream()
    with serving(JWKSEndpoint(document=jwks(issuer))) as jwks_server, serving(upstream) as upstream_server:
        text = policy_text(f"{jwks_server.url}/jwks", upstream_server.url)
        policy = tmp_path / "policy.yaml"
        policy.write_text(text)
        yield ReplicaWorld(tmp_path, policy, issuer, upstream, Prover.generate("ES256"))


def test_DP_14_replicas_sharing_redis_refuse_a_proof_used_at_the_other(replica_world: ReplicaWorld,
                                                                      redis_url: str) -> None:
    world = replica_world
    with world.replicas(redis_url) as (a, b):
        token, proof, marker = world.request()
        accepted = post(a, token, proof, marker)
        assert accepted.status_code == 200, accepted.text
        for replica in (b, a):  # captured at A, replayed at B, and at A again
            replayed = post(replica, token, proof, marker)
            assert replayed.status_code == 401, replayed.text
            assert replayed.json()["dpop_failure"] == "replayed_proof"
        assert world.forwarded(marker) == 1
        fresh_token, fresh, fresh_marker = world.request()
        assert post(b, fresh_token, fresh, fresh_marker).status_code == 200
        assert post(a, fresh_token, fresh, fresh_marker).json()["dpop_failure"] == "replayed_proof"
        assert world.forwarded(fresh_marker) == 1
        for replica in (a, b):  # neither the proof nor the token is ever logged
            assert token not in replica.log() and proof.split(".")[2] not in replica.log()


def test_DP_14_memory_store_is_per_process(replica_world: ReplicaWorld) -> None:
    """Without Redis each replica remembers only its own proofs: why replicas need the shared store."""
    world = replica_world
    with world.replicas(None) as (a, b):
        token, proof, marker = world.request()
        assert post(a, token, proof, marker).status_code == 200
        assert post(a, token, proof, marker).json()["dpop_failure"] == "replayed_proof"
        assert post(b, token, proof, marker).status_code == 200
        assert world.forwarded(marker) == 2


@pytest.mark.parametrize("shared_key", [True, False])
def test_DP_11_nonces_across_replicas(replica_world: ReplicaWorld, redis_url: str, shared_key: bool,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``ENFORCER_DPOP_NONCE_KEY`` every replica accepts the others' nonces; without it a
    replica asks for its own (the client retries once more), and never accepts a foreign one."""
    if shared_key:
        monkeypatch.setenv("ENFORCER_DPOP_NONCE_KEY", "n" * 40)
    else:
        monkeypatch.delenv("ENFORCER_DPOP_NONCE_KEY", raising=False)
    world = replica_world
    with world.replicas(redis_url) as (a, b):
        token, proof, marker = world.request("nonce")
        asked = post(a, token, proof, marker, "nonce")
        assert asked.status_code == 401 and asked.json()["error"] == "use_dpop_nonce", asked.text
        nonce = asked.headers["dpop-nonce"]
        again = world.prover.proof("POST", f"{PUBLIC}/nonce/tools", token, nonce=nonce)
        at_b = post(b, token, again, marker, "nonce")
        if shared_key:
            assert at_b.status_code == 200, at_b.text
        else:
            assert at_b.status_code == 401 and at_b.json()["error"] == "use_dpop_nonce"
            assert at_b.headers["dpop-nonce"] != nonce
            assert post(a, token, again, marker, "nonce").status_code == 200
        assert world.forwarded(marker) == 1
