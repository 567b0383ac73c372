"""JWT-SVIDs end to end: a SPIFFE workload identity in a request header, validated against the
bundle of the trust domain of its ``sub`` (STANDARDS.md section 14), seen by rules, forwarded as
``X-Enforcer-Workload`` and never as the SVID itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

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
from tests.workload_support import bundle, svid, write_bundle

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # the EdDSA SVID is built to be refused

AGENT = "spiffe://corp.example/agents/a1"
AUDIENCE = "spiffe://corp.example/enforcer"

WORKLOAD = """    workload_identity:
      jwt_svid:
        audience: ["{audience}"]
        bundles: {{corp.example: bundles/corp.json, partner.example: bundles/partner.json}}
      required: {required}
"""
RULES = """
      - {id: no-sandbox, effect: deny, workloads: ["spiffe://corp.example/sandbox/*"]}
      - {id: agents, effect: allow, workloads: ["spiffe://corp.example/agents/*", "spiffe://partner.example/*"]}
      - {id: bob-anyhow, effect: allow, subjects: [bob]}
"""


@dataclass
class SvidWorld:
    key: SigningKey  # the access-token issuer
    corp: SigningKey  # corp.example's JWT-SVID key
    corp_rsa: SigningKey
    partner: SigningKey
    stray: SigningKey  # in corp.example's bundle, but with use "x509-svid"
    eddsa: SigningKey  # in corp.example's bundle as jwt-svid: OKP keys fit no JWT-SVID alg
    upstream: RecordingUpstream
    url: str  # required: false
    strict_url: str  # required: true

    def get(self, token_claims: dict[str, object] | None = None, workload: str | None = None, *,
            strict: bool = False, **headers: str) -> httpx.Response:
        sent = {"authorization": f"Bearer {sign(self.key, token_claims or claims())}", **headers}
        if workload is not None:
            sent["workload-identity"] = workload
        return httpx.get(f"{self.strict_url if strict else self.url}/mcp/x", headers=sent, timeout=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SvidWorld]:
    directory = tmp_path_factory.mktemp("svid")
    keys = {name: SigningKey.generate(alg, kid=name) for name, alg in (
        ("issuer", "ES256"), ("corp", "ES256"), ("corp-rsa", "PS256"), ("partner", "ES384"), ("stray", "ES256"),
        ("eddsa", "EdDSA"))}
    upstream = RecordingUpstream()
    with serving(JWKSEndpoint(document=jwks(keys["issuer"]))) as issuer, serving(upstream) as upstream_server:
        urls = []
        for name, required in (("lenient", "false"), ("strict", "true")):
            (directory / name / "bundles").mkdir(parents=True)
            corp = bundle(keys["corp"], keys["corp-rsa"])
            corp["keys"].append({**keys["stray"].public_jwk(with_alg=False), "use": "x509-svid"})
            corp["keys"].append({**keys["eddsa"].public_jwk(with_alg=False), "use": "jwt-svid"})
            write_bundle(directory / name / "bundles" / "corp.json", corp)
            write_bundle(directory / name / "bundles" / "partner.json", bundle(keys["partner"], with_alg=True))
            text = basic_policy(jwks_line=f"jwks_uri: {issuer.url}/jwks", upstream=f"{upstream_server.url}/mcp",
                                extra_resource=WORKLOAD.format(audience=AUDIENCE, required=required), rules=RULES)
            urls.append(serve_enforcer(directory / name, text))
        with urls[0] as (_, lenient), urls[1] as (_, strict):
            yield SvidWorld(keys["issuer"], keys["corp"], keys["corp-rsa"], keys["partner"], keys["stray"],
                            keys["eddsa"], upstream, lenient.url, strict.url)


@pytest.fixture
def fresh(world: SvidWorld) -> SvidWorld:
    world.upstream.requests.clear()
    return world


def test_valid_svid_is_the_workload_identity_and_is_not_forwarded(fresh: SvidWorld) -> None:
    for key, workload in ((fresh.corp, AGENT), (fresh.corp_rsa, AGENT), (fresh.partner, "spiffe://partner.example/x")):
        response = fresh.get(workload=svid(key, workload, AUDIENCE), strict=True)
        assert response.status_code == 200, response.text
        seen = fresh.upstream.requests[-1]
        assert seen.header("x-enforcer-workload") == workload
        assert seen.header("workload-identity") is None and seen.header("authorization") is None


def test_workload_rules_see_the_svid(fresh: SvidWorld) -> None:
    denied = fresh.get(workload=svid(fresh.corp, "spiffe://corp.example/sandbox/t", AUDIENCE))
    assert denied.status_code == 403 and denied.json()["rule"] == "no-sandbox"
    unnamed = fresh.get(workload=svid(fresh.corp, "spiffe://corp.example/jobs/nightly", AUDIENCE))
    assert unnamed.status_code == 403 and unnamed.json()["reason"] == "no_matching_rule"


def test_without_an_svid_only_rules_without_workload_conditions_match(fresh: SvidWorld) -> None:
    assert fresh.get().status_code == 403  # alice: only the workload rule would allow her
    response = fresh.get(claims(sub="bob"))
    assert response.status_code == 200
    assert fresh.upstream.requests[-1].header("x-enforcer-workload") is None


def test_required_refuses_a_request_without_an_svid(fresh: SvidWorld) -> None:
    response = fresh.get(claims(sub="bob"), strict=True)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_workload" and "Workload-Identity header" in body["error_description"]
    assert response.headers["www-authenticate"] == (
        f'Bearer error="invalid_workload", error_description="{body["error_description"]}", '
        f'resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"')
    assert fresh.upstream.requests == []


def _cases(world: SvidWorld) -> dict[str, str]:
    return {
        "wrong trust domain": svid(world.corp, "spiffe://elsewhere.example/agents/a1", AUDIENCE),
        "signed by another trust domain's key": svid(world.partner, AGENT, AUDIENCE),
        "wrong audience": svid(world.corp, AGENT, RESOURCE),
        "expired": svid(world.corp, AGENT, AUDIENCE, ttl=-300),
        "key without use jwt-svid": svid(world.stray, AGENT, AUDIENCE),
        "EdDSA": svid(world.eddsa, AGENT, AUDIENCE),
        "extra header": svid(world.corp, AGENT, AUDIENCE, header={"x5u": "https://evil.test/x"}),
        "an access token instead": sign(world.corp, claims(sub=AGENT, aud=AUDIENCE)),
        "not a JWT": "hello",
    }


@pytest.mark.parametrize("case", ["wrong trust domain", "signed by another trust domain's key", "wrong audience",
                                  "expired", "key without use jwt-svid", "EdDSA", "extra header",
                                  "an access token instead", "not a JWT"])
@pytest.mark.parametrize("strict", [False, True])
def test_invalid_svids_are_refused(fresh: SvidWorld, case: str, strict: bool) -> None:
    """Whether or not the resource requires a workload identity, one that is sent must verify:
    a bad SVID is never treated as no SVID."""
    response = fresh.get(claims(sub="bob"), _cases(fresh)[case], strict=strict)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_workload"
    assert fresh.upstream.requests == []


def test_two_svid_headers_are_refused(fresh: SvidWorld) -> None:
    token = svid(fresh.corp, AGENT, AUDIENCE)
    response = httpx.get(f"{fresh.url}/mcp/x", timeout=10, headers=[
        ("authorization", f"Bearer {sign(fresh.key, claims())}"), ("workload-identity", token),
        ("workload-identity", token)])
    assert response.status_code == 401 and response.json()["error"] == "invalid_workload"


def test_metadata_does_not_claim_certificate_bound_tokens(world: SvidWorld) -> None:
    document = httpx.get(f"{world.url}/.well-known/oauth-protected-resource/mcp").json()
    assert "tls_client_certificate_bound_access_tokens" not in document
