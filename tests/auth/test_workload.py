"""The workload stage without HTTP: SPIFFE IDs, JWT-SVIDs (SV-01..SV-08), certificates, binding.

Each SVID check is a row: one thing wrong, the expected refusal. A valid SVID is also
validated by py-spiffe, an independent implementation, so "valid" here means valid there too.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from enforcer.auth.svid import JwtSvidVerifier, SvidError, bundle_key, trust_domain
from enforcer.auth.workload import (
    TrustedProxies,
    WorkloadVerifier,
    certificate_identity,
    check_certificate_binding,
    header_certificate,
    thumbprint,
)
from enforcer.clock import FrozenClock
from enforcer.context import Principal, RequestInfo
from enforcer.errors import InvalidToken, InvalidWorkload
from enforcer.policy.loader import check_policy
from enforcer.policy.model import WorkloadIdentity
from tests.support import SigningKey, b64url, raw_token
from tests.workload_support import bundle, spiffe_leaf, svid, write_bundle

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # the EdDSA SVID is built to be refused

AUD = "https://mcp.example.test/mcp"
AGENT = "spiffe://corp.example/agents/a1"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {"es256": SigningKey.generate("ES256", kid="corp-es"), "rs256": SigningKey.generate("RS256", kid="corp-rs"),
            "other": SigningKey.generate("ES256", kid="other-es"), "ed": SigningKey.generate("EdDSA", kid="corp-ed"),
            "sig": SigningKey.generate("ES256", kid="corp-sig")}


@pytest.fixture
def verifier(tmp_path: Path, keys: dict[str, SigningKey]) -> JwtSvidVerifier:
    corp = bundle(keys["es256"], keys["rs256"])
    corp["keys"].append({**keys["sig"].public_jwk(with_alg=False), "use": "x509-svid"})  # never for JWT-SVIDs
    corp["keys"].append({**keys["ed"].public_jwk(with_alg=False), "use": "jwt-svid"})  # OKP: not an SVID alg
    write_bundle(tmp_path / "corp.json", corp)
    write_bundle(tmp_path / "other.json", bundle(keys["other"]))
    return JwtSvidVerifier((AUD,), {"corp.example": str(tmp_path / "corp.json"),
                                    "other.example": str(tmp_path / "other.json")}, 30, FrozenClock(time.time()))


# -- SPIFFE IDs (SV-05) ------------------------------------------------------------------------


@pytest.mark.parametrize("spiffe_id, domain", [
    ("spiffe://corp.example/agents/a1", "corp.example"),
    ("spiffe://corp.example", "corp.example"),
    ("spiffe://a-b_c.d/x.y/z_1-2", "a-b_c.d"),
])
def test_valid_spiffe_ids(spiffe_id: str, domain: str) -> None:
    assert trust_domain(spiffe_id) == domain


@pytest.mark.parametrize("spiffe_id", [
    "SPIFFE://corp.example/a", "spiffe://Corp.example/a", "spiffe://corp.example/a/", "spiffe:///a",
    "spiffe://corp.example//a", "spiffe://corp.example/./a", "spiffe://corp.example/a/..",
    "spiffe://corp.example:443/a", "spiffe://user@corp.example/a", "spiffe://corp.example/a?q=1",
    "spiffe://corp.example/a#f", "spiffe://corp.example/a%20b", "https://corp.example/a",
    "spiffe://corp.example/" + "a" * 2048, "spiffe://corp.example/a\n",
])
def test_invalid_spiffe_ids(spiffe_id: str) -> None:
    with pytest.raises(SvidError):
        trust_domain(spiffe_id)


# -- JWT-SVIDs ---------------------------------------------------------------------------------


def test_valid_svid_names_its_workload_and_py_spiffe_agrees(verifier: JwtSvidVerifier,
                                                            keys: dict[str, SigningKey]) -> None:
    from spiffe import JwtBundle, JwtSvid, TrustDomain

    for key in (keys["es256"], keys["rs256"]):
        token = svid(key, AGENT, AUD)
        assert verifier.verify(token) == AGENT
        assert verifier.verify(token) == AGENT  # a cache hit
        reference = JwtBundle.parse(TrustDomain("corp.example"), json.dumps(bundle(key)).encode())
        assert str(JwtSvid.parse_and_validate(token, reference, {AUD}).spiffe_id) == AGENT


def test_typ_may_be_absent_or_jose_and_aud_an_array(verifier: JwtSvidVerifier, keys: dict[str, SigningKey]) -> None:
    assert verifier.verify(svid(keys["es256"], AGENT, AUD, typ=None)) == AGENT
    assert verifier.verify(svid(keys["es256"], AGENT, AUD, typ="JOSE")) == AGENT
    assert verifier.verify(svid(keys["es256"], AGENT, ["https://other.test", AUD])) == AGENT


def test_an_svid_without_kid_is_tried_against_the_fitting_keys(verifier: JwtSvidVerifier,
                                                               keys: dict[str, SigningKey]) -> None:
    assert verifier.verify(svid(keys["rs256"], AGENT, AUD, header={"kid": None})) == AGENT


def _unsigned_variant(keys: dict[str, SigningKey]) -> str:
    header = {"alg": "none", "kid": keys["es256"].kid, "typ": "JWT"}
    return raw_token(header, {"sub": AGENT, "aud": AUD, "exp": int(time.time()) + 60}, b"not-a-signature")


def _unsigned(header: dict[str, Any]) -> str:
    """A token whose header is refused before any signature check (joserfc would not sign it)."""
    return raw_token(header, {"sub": AGENT, "aud": AUD, "exp": int(time.time()) + 60}, b"s" * 64)


def _forged(keys: dict[str, SigningKey]) -> str:
    """Signed by other.example's key, claiming a corp.example SPIFFE ID under other's kid."""
    return svid(keys["other"], AGENT, AUD)


def _hs256(keys: dict[str, SigningKey]) -> str:
    secret = SigningKey(__import__("joserfc").jwk.OctKey.import_key(os.urandom(32)), "HS256", "corp-es")
    return svid(secret, AGENT, AUD)


#: (what is wrong, builder(keys) -> token, a fragment of the refusal)
BAD_SVIDS: list[tuple[str, Any, str]] = [
    ("wrong trust domain: no bundle", lambda k: svid(k["es256"], "spiffe://evil.example/a", AUD), "not trusted"),
    ("sub in corp.example signed by other.example's key", _forged, "fits"),
    ("wrong audience", lambda k: svid(k["es256"], AGENT, "https://elsewhere.test/mcp"), "audience"),
    ("aud missing", lambda k: svid(k["es256"], AGENT, None), "aud"),
    ("aud empty array", lambda k: svid(k["es256"], AGENT, []), "aud"),
    ("aud not strings", lambda k: svid(k["es256"], AGENT, [AUD, 7]), "aud"),
    ("expired", lambda k: svid(k["es256"], AGENT, AUD, ttl=-120), "expired"),
    ("exp missing", lambda k: svid(k["es256"], AGENT, AUD, exp=None), "exp"),
    ("exp a string", lambda k: svid(k["es256"], AGENT, AUD, exp=str(int(time.time()) + 60)), "exp"),
    ("exp a boolean", lambda k: svid(k["es256"], AGENT, AUD, exp=True), "exp"),
    ("nbf in the future", lambda k: svid(k["es256"], AGENT, AUD, nbf=int(time.time()) + 600), "nbf"),
    ("key without use jwt-svid", lambda k: svid(k["sig"], AGENT, AUD), "fits"),
    ("EdDSA (SV-03)", lambda k: svid(k["ed"], AGENT, AUD), "alg"),
    ("alg none", _unsigned_variant, "alg"),
    ("HS256 with a guessed secret", _hs256, "alg"),
    ("alg lower-case", lambda k: _unsigned({"alg": "es256", "kid": "corp-es"}), "alg"),
    ("jku header (SV-02)", lambda k: svid(k["es256"], AGENT, AUD, header={"jku": "https://evil.test/jwks"}),
     "only alg, kid and typ"),
    ("jwk header (SV-02)", lambda k: svid(k["es256"], AGENT, AUD, header={"jwk": k["es256"].public_jwk()}),
     "only alg, kid and typ"),
    ("crit header (SV-02)", lambda k: _unsigned({"alg": "ES256", "kid": "corp-es", "crit": ["exp"], "exp": 1}),
     "only alg"),
    ("typ at+jwt (SV-04)", lambda k: svid(k["es256"], AGENT, AUD, typ="at+jwt"), "typ"),
    ("typ lower-case jwt", lambda k: svid(k["es256"], AGENT, AUD, typ="jwt"), "typ"),
    ("unknown kid", lambda k: svid(k["es256"], AGENT, AUD, header={"kid": "nope"}), "fits"),
    ("RS256 key used as PS256", lambda k: _resigned(k["rs256"], "PS256", {"kid": "corp-es"}), "fits"),
    ("sub not a SPIFFE ID", lambda k: svid(k["es256"], "corp.example/agents/a1", AUD), "SPIFFE ID"),
    ("sub missing", lambda k: svid(k["es256"], None, AUD), "sub"),
    ("tampered payload", lambda k: _tampered(svid(k["es256"], AGENT, AUD)), "signature"),
    ("JSON serialization (SV-01)", lambda k: json.dumps({"payload": "x", "signature": "y"}), "compact"),
    ("padding in a segment", lambda k: svid(k["es256"], AGENT, AUD).replace(".", "=.", 1), "compact"),
    ("duplicate claim", lambda k: _duplicate_sub(k["es256"]), "JSON"),
    ("too large", lambda k: "a" * 9000, "larger"),
]


def _resigned(key: SigningKey, alg: str, header: dict[str, Any]) -> str:
    return svid(SigningKey(key.key, alg, key.kid), AGENT, AUD, header=header)


def _tampered(token: str) -> str:
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "spiffe://corp.example/admin"
    return f"{head}.{b64url(json.dumps(claims).encode())}.{signature}"


def _duplicate_sub(key: SigningKey) -> str:
    from joserfc import jws

    body = ('{"sub": "spiffe://corp.example/x", "sub": "' + AGENT + '", "aud": "' + AUD + '", "exp": '
            + str(int(time.time()) + 60) + "}").encode()
    return jws.serialize_compact({"alg": key.alg, "kid": key.kid}, body, key.key, algorithms=[key.alg])


@pytest.mark.parametrize("case, build, fragment", BAD_SVIDS, ids=[row[0] for row in BAD_SVIDS])
def test_bad_svids_are_refused(verifier: JwtSvidVerifier, keys: dict[str, SigningKey], case: str, build: Any,
                               fragment: str) -> None:
    with pytest.raises(SvidError) as refused:
        verifier.verify(build(keys))
    assert fragment in str(refused.value), str(refused.value)


def test_expiry_is_checked_again_on_a_cache_hit(verifier: JwtSvidVerifier, keys: dict[str, SigningKey]) -> None:
    token = svid(keys["es256"], AGENT, AUD, ttl=60)
    assert verifier.verify(token) == AGENT
    verifier.clock.advance(120)  # type: ignore[attr-defined]
    with pytest.raises(SvidError, match="expired"):
        verifier.verify(token)


def test_bundle_rotation_is_picked_up_and_revokes_cached_svids(tmp_path: Path, keys: dict[str, SigningKey]) -> None:
    path = write_bundle(tmp_path / "corp.json", bundle(keys["es256"]))
    clock = FrozenClock(time.time())
    checker = JwtSvidVerifier((AUD,), {"corp.example": str(path)}, 30, clock)
    old, new = svid(keys["es256"], AGENT, AUD), svid(keys["rs256"], AGENT, AUD)
    assert checker.verify(old) == AGENT
    with pytest.raises(SvidError):
        checker.verify(new)
    write_bundle(path, bundle(keys["rs256"]))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    clock.advance(11)
    assert checker.verify(new) == AGENT
    with pytest.raises(SvidError):
        checker.verify(old)


def test_unreadable_bundle_refuses_its_trust_domain(tmp_path: Path, keys: dict[str, SigningKey]) -> None:
    checker = JwtSvidVerifier((AUD,), {"corp.example": str(tmp_path / "missing.json")}, 30, FrozenClock(time.time()))
    with pytest.raises(SvidError, match="fits"):
        checker.verify(svid(keys["es256"], AGENT, AUD))


@pytest.mark.parametrize("jwk, problem", [
    ({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "kid": "k"}, "use"),
    ({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "use": "sig", "kid": "k"}, "use"),
    ({"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "use": "jwt-svid"}, "kid"),
    ({"kty": "OKP", "crv": "Ed25519", "x": "a", "use": "jwt-svid", "kid": "k"}, "RSA or EC"),
    ({"kty": "oct", "k": "c2VjcmV0", "use": "jwt-svid", "kid": "k"}, "private"),
])
def test_bundle_keys_must_be_jwt_svid_keys(jwk: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        bundle_key(jwk)


def test_a_bundle_key_with_alg_verifies_only_that_alg(keys: dict[str, SigningKey]) -> None:
    jwk = {**keys["rs256"].public_jwk(with_alg=True), "use": "jwt-svid"}
    assert bundle_key(jwk).algorithms == {"RS256"}
    without_alg = {name: value for name, value in jwk.items() if name != "alg"}
    assert bundle_key(without_alg).algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}


# -- certificates ------------------------------------------------------------------------------


def test_certificate_identity(ca: trustme.CA) -> None:
    assert certificate_identity(spiffe_leaf(ca, AGENT).der) == (AGENT, None)
    assert certificate_identity(spiffe_leaf(ca).der) == (None, None)  # no SAN: no workload
    assert certificate_identity(spiffe_leaf(ca, "https://corp.example/x").der) == (None, None)
    spiffe, problem = certificate_identity(spiffe_leaf(ca, AGENT, "spiffe://corp.example/b").der)
    assert spiffe is None and "more than one URI SAN" in (problem or "")
    spiffe, problem = certificate_identity(spiffe_leaf(ca, AGENT, is_ca=True).der)
    assert spiffe is None and "CA certificate" in (problem or "")
    spiffe, problem = certificate_identity(spiffe_leaf(ca, "spiffe://corp.example/a/../b").der)
    assert spiffe is None and "not a valid SPIFFE ID" in (problem or "")
    assert certificate_identity(b"\x30\x03junk")[1] == "the client certificate cannot be parsed"


def _request(headers: list[tuple[bytes, bytes]] = (), client: str | None = "127.0.0.1",  # type: ignore[assignment]
             cert: bytes | None = None) -> RequestInfo:
    return RequestInfo("GET", b"/mcp", b"", tuple(headers), client=client, client_cert=cert)


def test_client_cert_header_is_an_sf_byte_sequence(ca: trustme.CA) -> None:
    der = spiffe_leaf(ca, AGENT).der
    value = b":" + base64.b64encode(der) + b":"
    assert header_certificate(_request([(b"client-cert", value)])) == der
    assert header_certificate(_request()) is None
    for bad in ([(b"client-cert", base64.b64encode(der))], [(b"client-cert", b":not base64!:")],
                [(b"client-cert", value), (b"client-cert", value)], [(b"client-cert", b"::")]):
        with pytest.raises(InvalidWorkload):
            header_certificate(_request(bad))


def test_trusted_proxies() -> None:
    proxies = TrustedProxies(("10.0.0.0/8", "127.0.0.1", "fd00::/8"))
    assert proxies.trusts("10.1.2.3") and proxies.trusts("127.0.0.1") and proxies.trusts("fd00::1")
    assert proxies.trusts("::ffff:10.0.0.1")  # IPv4-mapped
    assert not proxies.trusts("127.0.0.2") and not proxies.trusts("11.0.0.1") and not proxies.trusts(None)
    assert not proxies.trusts("not-an-address")


def _principal(cnf: dict[str, Any] | None = None, client_id: str = "agent-42") -> Principal:
    return Principal("test", "https://issuer.test", "alice", client_id, frozenset(), "j", 0, "h", cnf=cnf)


def test_certificate_binding(ca: trustme.CA) -> None:
    der, other = spiffe_leaf(ca, AGENT).der, spiffe_leaf(ca, AGENT).der
    bound = _principal({"x5t#S256": thumbprint(der)})
    check_certificate_binding(bound, der)
    check_certificate_binding(_principal(), None)  # not bound: nothing to check
    check_certificate_binding(_principal({"jkt": "x" * 43}), None)  # bound to a DPoP key, not a certificate
    with pytest.raises(InvalidToken, match="not the one"):
        check_certificate_binding(bound, other)
    with pytest.raises(InvalidToken, match="mutual TLS"):
        check_certificate_binding(bound, None)
    with pytest.raises(InvalidToken):
        check_certificate_binding(_principal({"x5t#S256": 42}), der)
    assert len(thumbprint(der)) == 43 and "=" not in thumbprint(der)


def test_certificate_and_svid_must_name_the_same_workload(tmp_path: Path, ca: trustme.CA,
                                                          keys: dict[str, SigningKey]) -> None:
    write_bundle(tmp_path / "corp.json", bundle(keys["es256"]))
    config = WorkloadIdentity.model_validate({"mtls": True, "jwt_svid": {"bundles": {
        "corp.example": str(tmp_path / "corp.json")}}, "required": True})
    stage = WorkloadVerifier(config, AUD, FrozenClock(time.time()))
    cert = spiffe_leaf(ca, AGENT).der
    same = [(b"workload-identity", svid(keys["es256"], AGENT, AUD).encode())]
    other = [(b"workload-identity", svid(keys["es256"], "spiffe://corp.example/b", AUD).encode())]
    assert stage.identify(_request(same, cert=cert), _principal()).workload == AGENT
    assert stage.identify(_request(cert=cert), _principal()).workload == AGENT
    assert stage.identify(_request(same), _principal()).workload == AGENT
    with pytest.raises(InvalidWorkload, match="different workloads"):
        stage.identify(_request(other, cert=cert), _principal())
    with pytest.raises(InvalidWorkload, match="requires a workload identity"):
        stage.identify(_request(), _principal())
    with pytest.raises(InvalidWorkload, match="at most one"):
        stage.identify(_request(same + same), _principal())
    assert stage.strip == {b"client-cert", b"client-cert-chain", b"workload-identity"}


# -- policy load errors ------------------------------------------------------------------------

POLICY = """version: 1
issuers:
  - {{id: corp, issuer: https://auth.example.test, jwks_uri: https://auth.example.test/jwks}}
resources:
  - id: demo
    resource: https://mcp.example.test/mcp
    upstream: http://127.0.0.1:9000/mcp
    issuers: [corp]
{workload}
    rules:
{rules}
  - id: plain
    resource: https://api.example.test/api
    match: {{path_prefix: /api}}
    upstream: http://127.0.0.1:9000/api
    issuers: [corp]
    rules:
      - {{id: by-workload, effect: deny, workloads: ["spiffe://corp.example/*"]}}
"""


def _problems(tmp_path: Path, workload: str, rules: str) -> list[str]:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(workload=workload, rules=rules))
    return [f"{p.line}:{p.code}:{p.message}" for p in check_policy([path]).problems if p.severity == "error"]


def test_workload_policy_mistakes_are_located_load_errors(tmp_path: Path) -> None:
    workload = """    workload_identity:
      client_cert_header: {trusted_proxies: ["10.0.0.1/8", "nowhere"]}
      jwt_svid:
        header: Authorization
        audience: []
        bundles: {"Corp.Example": corp.json, "corp.example": ""}"""
    rules = """      - {id: a, effect: allow, workloads: []}
      - {id: b, effect: allow, workload_is_client_id: false}"""
    problems = _problems(tmp_path, workload, rules)
    assert problems == [
        "10:invalid_value:resources[0].workload_identity.client_cert_header.trusted_proxies[0]: '10.0.0.1/8' is "
        "not an IP address or CIDR range (such as 10.0.0.0/8 or 127.0.0.1)",
        "10:invalid_value:resources[0].workload_identity.client_cert_header.trusted_proxies[1]: 'nowhere' is not "
        "an IP address or CIDR range (such as 10.0.0.0/8 or 127.0.0.1)",
        "12:invalid_value:resources[0].workload_identity.jwt_svid.header: 'Authorization' is not a header a "
        "JWT-SVID can travel in; use a name of its own such as Workload-Identity",
        "13:invalid_value:resources[0].workload_identity.jwt_svid.audience: list at least one non-empty audience, "
        "or remove the key to use the resource identifier",
        "14:invalid_value:resources[0].workload_identity.jwt_svid.bundles.Corp.Example: 'Corp.Example' is not a "
        "SPIFFE trust domain name (lower-case letters, digits, '.', '-', '_')",
        "14:invalid_value:resources[0].workload_identity.jwt_svid.bundles.corp.example: give the path of the "
        "trust domain's bundle",
        "16:invalid_value:resources[0].rules[0].workloads: an empty list matches nothing; remove the key to match "
        "anything",
        "17:invalid_value:resources[0].rules[1].workload_is_client_id: only `true` is meaningful (the workload "
        "identity must equal client_id); remove the key",
        "24:unreachable_condition:resources[1].rules[0].workloads: this resource has no workload_identity, so no "
        "request has a workload identity; configure workload_identity or remove the condition",
    ], "\n".join(problems)


def test_workload_identity_needs_a_source(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "    workload_identity: {required: true}", "      - {id: a, effect: allow}")
    assert problems[0].endswith("resources[0].workload_identity: name at least one source: mtls: true, "
                                "client_cert_header or jwt_svid")
