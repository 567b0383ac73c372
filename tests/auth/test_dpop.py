"""DPoP (RFC 9449, STANDARDS.md DP-01..DP-17) at the level of ``DPoPVerifier`` and its neighbours.

Every proof check of RFC 9449 section 4.3 has a refusal in ``PROOF_CASES``; the cases are
written against a small ``Kit`` (a prover key, another key, the token, the public URL) so the
end-to-end suite (``tests/e2e/test_dpop.py``) runs the same table through a real enforcer.
Proofs are made with joserfc from real keys; nothing is mocked but the clock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

from enforcer.auth.claims import check_cnf
from enforcer.auth.dpop import (
    MAX_PROOF_BYTES,
    DPoPVerifier,
    NonceIssuer,
    access_token_hash,
    check_bearer_binding,
    normalized_uri,
)
from enforcer.auth.extract import access_token
from enforcer.auth.replay import MemoryReplayCache, ReplayCacheUnavailable
from enforcer.clock import FrozenClock
from enforcer.context import Principal, RequestInfo
from enforcer.errors import (
    DependencyUnavailable,
    DPoPInvalidToken,
    EnforcerError,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    UseDPoPNonce,
)
from enforcer.metadata import challenge, metadata_document
from enforcer.policy.model import Issuer, Resource
from enforcer.proxy.headers import upstream_request_headers
from tests.support import b64url, raw_token

PUBLIC_ORIGIN = "https://mcp.example.test"
PATH = "/mcp/tools"
URL = PUBLIC_ORIGIN + PATH
DEFAULT_ALGS = ("ES256", "EdDSA", "PS256", "RS256")


# -- the client side: proofs ----------------------------------------------------------------------


@dataclass
class Prover:
    """A client's DPoP key and the proofs it makes (RFC 9449 section 4.2)."""

    key: Key
    alg: str = "ES256"

    @classmethod
    def generate(cls, alg: str = "ES256") -> Prover:
        if alg.startswith("ES"):
            key: Key = ECKey.generate_key({"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg])
        elif alg in ("EdDSA", "Ed25519"):
            key = OKPKey.generate_key("Ed25519")
        else:
            key = RSAKey.generate_key(2048)
        return cls(key, alg)

    @property
    def jkt(self) -> str:
        return self.key.thumbprint()

    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    def claims(self, method: str, url: str, token: str | None, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {"jti": uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(time.time())}
        if token is not None:
            claims["ath"] = access_token_hash(token)
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def header(self, **overrides: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk()}
        header.update(overrides)
        return {k: v for k, v in header.items() if v is not None}

    def proof(self, method: str = "POST", url: str = URL, token: str | None = None, *,
              header: dict[str, Any] | None = None, signer: Key | None = None, **claims: Any) -> str:
        """A proof; ``header`` overrides header members, keyword arguments claims (None drops one)."""
        full_header = self.header(**(header or {}))
        payload = json.dumps(self.claims(method, url, token, **claims)).encode()
        return jws.serialize_compact(full_header, payload, signer or self.key, algorithms=[full_header["alg"]])


def edit_segment(proof: str, index: int, edit: Callable[[dict[str, Any]], None]) -> str:
    """The proof with one JSON segment (0 header, 1 payload) edited, its signature kept."""
    segments = proof.split(".")
    value = json.loads(base64.urlsafe_b64decode(segments[index] + "=" * (-len(segments[index]) % 4)))
    edit(value)
    segments[index] = b64url(json.dumps(value).encode())
    return ".".join(segments)


def with_url(url: str, **parts: str) -> str:
    """``url`` with some of its parts (scheme, netloc, path) replaced."""
    return urlsplit(url)._replace(**parts).geturl()


# -- the table of refusals, shared with the end-to-end suite ----------------------------------------


@dataclass
class Kit:
    """What a case needs to build its request: the token (bound to ``prover``), other keys, and a
    way to get a token bound to any key (``token_for``)."""

    prover: Prover
    other: Prover
    token: str
    token_for: Callable[[str], str]
    url: str = URL
    path: str = PATH


@dataclass
class Call:
    """One request of a case: its DPoP header values, method, path and token."""

    proofs: tuple[str, ...]
    method: str = "POST"
    path: str | None = None
    token: str | None = None


def _proof(kit: Kit, **kwargs: Any) -> Call:
    return Call((kit.prover.proof(url=kit.url, token=kit.token, **kwargs),))


def _raw(kit: Kit, header: dict[str, Any], claims: dict[str, Any] | None = None, signature: bytes = b"x" * 64) -> Call:
    payload = claims if claims is not None else kit.prover.claims("POST", kit.url, kit.token)
    return Call((raw_token(header, payload, signature),))


def _hs256(kit: Kit) -> Call:
    secret = OctKey.generate_key(256)
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": kit.prover.public_jwk()}
    payload = json.dumps(kit.prover.claims("POST", kit.url, kit.token)).encode()
    return Call((jws.serialize_compact(header, payload, secret, algorithms=["HS256"]),))


def _private_jwk(kit: Kit) -> Call:
    return _proof(kit, header={"jwk": dict(kit.prover.key.as_dict(private=True))})


def _jwk_of_other_key(kit: Kit) -> Call:
    """The header names another key (the token's binding is irrelevant: the signature fails first)."""
    return _proof(kit, header={"jwk": kit.other.public_jwk()})


def _weak_rsa(kit: Kit) -> Call:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    key = RSAKey.import_key(weak)
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": dict(key.as_dict(private=False))}
    payload = json.dumps(kit.prover.claims("POST", kit.url, kit.token)).encode()
    return Call((jws.serialize_compact(header, payload, key, algorithms=["RS256"]),))


def _tampered_payload(kit: Kit) -> Call:
    proof = kit.prover.proof(url=kit.url, token=kit.token)
    return Call((edit_segment(proof, 1, lambda claims: claims.update(htm="POST", jti="another")),))


def _non_canonical(kit: Kit) -> Call:
    """The ES256 signature (64 bytes, 86 characters) with a padding bit set in its last character:
    it decodes to the same bytes, but is not the canonical encoding (STANDARDS.md JA-15)."""
    proof = kit.prover.proof(url=kit.url, token=kit.token)
    last = proof[-1]
    assert last in "AQgw"  # 2 data bits, 4 zero padding bits
    return Call((proof[:-1] + chr(ord(last) + 1),))


def _duplicate_header_member(kit: Kit) -> Call:
    header = json.dumps(kit.prover.header())[:-1] + ', "typ": "dpop+jwt"}'
    return Call((raw_token(header.encode(), kit.prover.claims("POST", kit.url, kit.token)),))


PROOF_CASES: list[Any] = [
    # DP-03: one DPoP header
    pytest.param(lambda k: Call(()), "missing_proof", id="DP-03-no-dpop-header"),
    pytest.param(lambda k: Call((k.prover.proof(url=k.url, token=k.token), k.prover.proof(url=k.url, token=k.token))),
                 "multiple_proofs", id="DP-03-two-dpop-headers"),
    # DP-04: a single well-formed compact JWS
    pytest.param(lambda k: Call(("not-a-jwt",)), "malformed_proof", id="DP-04-not-a-jws"),
    pytest.param(lambda k: Call((json.dumps({"payload": "x", "signatures": []}),)), "malformed_proof",
                 id="DP-04-json-serialization"),
    pytest.param(lambda k: Call((k.prover.proof(url=k.url, token=k.token) + "==",)), "malformed_proof",
                 id="DP-04-padding"),
    pytest.param(lambda k: Call(tuple(k.prover.proof(url=k.url, token=k.token).rsplit(".", 1)[:1])),
                 "malformed_proof", id="DP-04-two-segments"),
    pytest.param(lambda k: Call(("a" * (MAX_PROOF_BYTES + 1),)), "malformed_proof", id="DP-04-oversized"),
    pytest.param(lambda k: Call((raw_token(b"not json", b"{}"),)), "malformed_proof", id="DP-04-header-not-json"),
    pytest.param(_duplicate_header_member, "malformed_proof", id="DP-04-duplicate-header-member"),
    pytest.param(_non_canonical, "malformed_proof", id="DP-04-non-canonical-base64url"),
    # DP-06: typ
    pytest.param(lambda k: _proof(k, header={"typ": "jwt"}), "wrong_typ", id="DP-06-typ-jwt"),
    pytest.param(lambda k: _proof(k, header={"typ": "at+jwt"}), "wrong_typ", id="DP-06-typ-access-token"),
    pytest.param(lambda k: _proof(k, header={"typ": None}), "wrong_typ", id="DP-06-no-typ"),
    # DP-07: alg asymmetric, allowed, case-sensitive
    pytest.param(lambda k: _raw(k, {"typ": "dpop+jwt", "alg": "none", "jwk": k.prover.public_jwk()}),
                 "algorithm_not_allowed", id="DP-07-alg-none"),
    pytest.param(_hs256, "algorithm_not_allowed", id="DP-07-alg-hs256"),
    pytest.param(lambda k: _raw(k, {"typ": "dpop+jwt", "alg": "es256", "jwk": k.prover.public_jwk()}),
                 "algorithm_not_allowed", id="DP-07-alg-wrong-case"),
    pytest.param(lambda k: Call((Prover.generate("ES384").proof(url=k.url, token=k.token),)),
                 "algorithm_not_allowed", id="DP-07-alg-not-in-policy"),
    # DP-08: jwk public only, fits alg, and verifies the signature
    pytest.param(lambda k: _proof(k, header={"jwk": None}), "invalid_key", id="DP-08-no-jwk"),
    pytest.param(_private_jwk, "invalid_key", id="DP-08-private-jwk"),
    pytest.param(lambda k: _proof(k, header={"jwk": {"kty": "oct", "k": b64url(b"s" * 32)}}), "invalid_key",
                 id="DP-08-symmetric-jwk"),
    pytest.param(lambda k: _proof(k, header={"jwk": Prover.generate("EdDSA").public_jwk()}), "invalid_key",
                 id="DP-08-jwk-type-does-not-fit-alg"),
    pytest.param(_weak_rsa, "invalid_key", id="DP-08-rsa-1024"),
    pytest.param(_jwk_of_other_key, "bad_signature", id="DP-08-signed-by-another-key"),
    pytest.param(_tampered_payload, "bad_signature", id="DP-08-tampered-payload"),
    pytest.param(lambda k: _raw(k, k.prover.header(crit=["x-foo"], **{"x-foo": 1})), "malformed_proof",
                 id="DP-08-crit-header"),
    pytest.param(lambda k: _proof(k, header={"jku": "https://attacker.test/jwks"}), "malformed_proof",
                 id="DP-08-jku-header"),
    pytest.param(lambda k: _raw(k, k.prover.header(x5c=["MIIB"])), "malformed_proof", id="DP-08-x5c-header"),
    # DP-05: required claims, typed
    pytest.param(lambda k: _proof(k, jti=None), "missing_claim", id="DP-05-no-jti"),
    pytest.param(lambda k: _proof(k, jti=""), "missing_claim", id="DP-05-empty-jti"),
    pytest.param(lambda k: _proof(k, jti="j" * 257), "malformed_proof", id="DP-05-long-jti"),
    pytest.param(lambda k: _proof(k, htm=None), "missing_claim", id="DP-05-no-htm"),
    pytest.param(lambda k: _proof(k, htu=None), "missing_claim", id="DP-05-no-htu"),
    pytest.param(lambda k: _proof(k, iat=None), "missing_claim", id="DP-05-no-iat"),
    pytest.param(lambda k: _proof(k, iat=str(int(time.time()))), "missing_claim", id="DP-05-iat-string"),
    pytest.param(lambda k: _proof(k, iat=True), "missing_claim", id="DP-05-iat-boolean"),
    pytest.param(lambda k: Call((k.prover.proof(url=k.url, token=None),)), "missing_claim", id="DP-05-no-ath"),
    # DP-09: htm
    pytest.param(lambda k: _proof(k, htm="GET"), "method_mismatch", id="DP-09-other-method"),
    pytest.param(lambda k: _proof(k, htm="post"), "method_mismatch", id="DP-09-method-case"),
    # DP-10: htu is the external URI of this request
    pytest.param(lambda k: _proof(k, htu=k.url.replace("/tools", "/other")), "uri_mismatch", id="DP-10-other-path"),
    pytest.param(lambda k: _proof(k, htu=k.url + "/x"), "uri_mismatch", id="DP-10-longer-path"),
    pytest.param(lambda k: _proof(k, htu=with_url(k.url, netloc=f"{urlsplit(k.url).hostname}:8443")),
                 "uri_mismatch", id="DP-10-other-port"),
    pytest.param(lambda k: _proof(k, htu=with_url(k.url, netloc="evil.test")), "uri_mismatch", id="DP-10-other-host"),
    pytest.param(lambda k: _proof(k, htu=with_url(k.url, scheme="https" if k.url.startswith("http:") else "http")),
                 "uri_mismatch", id="DP-10-other-scheme"),
    pytest.param(lambda k: _proof(k, htu=with_url(k.url, scheme="ftp")), "uri_mismatch", id="DP-10-ftp"),
    pytest.param(lambda k: _proof(k, htu=with_url(k.url, netloc="user@" + urlsplit(k.url).netloc)), "uri_mismatch",
                 id="DP-10-userinfo"),
    pytest.param(lambda k: _proof(k, htu=k.path), "uri_mismatch", id="DP-10-relative"),
    # DP-12: iat window (max_age 300, skew 30)
    pytest.param(lambda k: _proof(k, iat=int(time.time()) - 400), "too_old", id="DP-12-too-old"),
    pytest.param(lambda k: _proof(k, iat=int(time.time()) + 120), "issued_in_future", id="DP-12-in-the-future"),
    # DP-13: ath is the hash of this token
    pytest.param(lambda k: Call((k.prover.proof(url=k.url, token=k.token + "x"),)), "token_hash_mismatch",
                 id="DP-13-ath-of-another-token"),
    pytest.param(lambda k: _proof(k, ath=b64url(b"\0" * 32)), "token_hash_mismatch", id="DP-13-ath-garbage"),
]

#: cases whose refusal is ``invalid_token`` in the DPoP scheme (RFC 9449 section 7.1), not a proof error
TOKEN_CASES: list[Any] = [
    # DP-13: cnf.jkt is the thumbprint of the proof key
    pytest.param(lambda k: Call((k.prover.proof(url=k.url, token=(t := k.token_for(k.other.jkt))),), token=t),
                 id="DP-13-token-bound-to-another-key"),
]

#: proofs that must be accepted: normalisation of htu (DP-10), typ spellings, algorithms
ACCEPTED_CASES: list[Any] = [
    pytest.param(lambda k: _proof(k), id="plain"),
    pytest.param(lambda k: _proof(k, htu=k.url + "?q=1#frag"), id="DP-10-query-and-fragment-ignored"),
    pytest.param(lambda k: _proof(k, htu=k.url.upper().replace(k.path.upper(), k.path)), id="DP-10-scheme-host-case"),
    pytest.param(lambda k: _proof(k, htu=k.url.replace("/tools", "/%74ools")), id="DP-10-encoded-unreserved"),
    pytest.param(lambda k: _proof(k, header={"typ": "application/dpop+jwt"}), id="DP-06-typ-with-application"),
    pytest.param(lambda k: _proof(k, header={"typ": "DPoP+JWT"}), id="DP-06-typ-case-insensitive"),
    pytest.param(lambda k: _proof(k, iat=int(time.time()) + 20), id="DP-12-within-skew"),
    pytest.param(lambda k: _proof(k, header={"kid": "ignored"}), id="kid-ignored"),
]


# -- the verifier under test ---------------------------------------------------------------------


def resource(**overrides: Any) -> Resource:
    document: dict[str, Any] = {
        "id": "demo", "resource": f"{PUBLIC_ORIGIN}/mcp", "upstream": "http://127.0.0.1:9/mcp", "issuers": ["test"],
        "match": {"path_prefix": "/mcp"}, "dpop": "required", "scopes_supported": ["tools:read"],
    }
    document.update(overrides)
    return Resource.model_validate(document)


def principal(jkt: str | None, cnf: dict[str, Any] | None = None) -> Principal:
    bound = cnf if cnf is not None else ({"jkt": jkt} if jkt is not None else None)
    return Principal("test", "https://issuer.test", "alice", "agent-42", frozenset(), "jti", 0, "hash", cnf=bound)


def request(call: Call, token: str, *, scheme: str = "DPoP", host: str = "mcp.example.test") -> RequestInfo:
    headers = [(b"host", host.encode()), (b"authorization", f"{scheme} {token}".encode())]
    headers += [(b"dpop", proof.encode("latin-1")) for proof in call.proofs]
    return RequestInfo(method=call.method, raw_path=(call.path or PATH).encode(), query_string=b"",
                       headers=tuple(headers))


@dataclass
class Unit:
    """A verifier with a frozen clock and an in-memory replay cache, and tokens bound to keys."""

    kit: Kit
    clock: FrozenClock
    replay: MemoryReplayCache
    verifier: DPoPVerifier
    bound: dict[str, str] = field(default_factory=dict)  # token -> its cnf.jkt

    def run(self, call: Call, *, scheme: str = "DPoP", verifier: DPoPVerifier | None = None) -> Any:
        token = call.token or self.kit.token
        return asyncio.run((verifier or self.verifier).verify(
            request(call, token, scheme=scheme), token, scheme == "DPoP", principal(self.bound.get(token))))


def make_unit(dpop: str = "required", **options: Any) -> Unit:
    prover, other = Prover.generate("ES256"), Prover.generate("ES256")
    bound: dict[str, str] = {}

    def token_for(jkt: str) -> str:
        token = f"eyJ0eXAiOiJhdCtqd3QifQ.{b64url(jkt.encode())}.c2ln"
        bound[token] = jkt
        return token

    kit = Kit(prover, other, token_for(prover.jkt), token_for)
    clock = FrozenClock(time.time())
    replay = MemoryReplayCache(clock)
    verifier = DPoPVerifier(resource(dpop=dpop, dpop_options={"algorithms": ["ES256", "EdDSA", "PS256", "RS256"],
                                                              **options}),
                            replay, clock, nonce_key=b"k" * 32)
    return Unit(kit, clock, replay, verifier, bound)


@pytest.fixture
def unit() -> Unit:
    return make_unit()


@pytest.mark.parametrize(("build", "failure"), PROOF_CASES)
def test_proof_refusals(unit: Unit, build: Callable[[Kit], Call], failure: str) -> None:
    with pytest.raises(InvalidDPoPProof) as raised:
        unit.run(build(unit.kit))
    assert raised.value.failure == failure, raised.value.description
    assert raised.value.status == 401 and raised.value.body()["error"] == "invalid_dpop_proof"
    assert raised.value.body()["reason"] == "invalid_dpop_proof"


@pytest.mark.parametrize("build", TOKEN_CASES)
def test_token_binding_refusals(unit: Unit, build: Callable[[Kit], Call]) -> None:
    with pytest.raises(DPoPInvalidToken) as raised:
        unit.run(build(unit.kit))
    assert raised.value.body()["error"] == "invalid_token"
    assert "cnf.jkt" in raised.value.description


@pytest.mark.parametrize("build", ACCEPTED_CASES)
def test_accepted_proofs(unit: Unit, build: Callable[[Kit], Call]) -> None:
    verified = unit.run(build(unit.kit))
    assert verified.jkt == unit.kit.prover.jkt and verified.alg == "ES256"


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "PS256", "RS256"])
def test_DP_07_every_allowed_algorithm_verifies(alg: str) -> None:
    unit = make_unit()
    prover = Prover.generate(alg)
    token = unit.kit.token_for(prover.jkt)
    verified = unit.run(Call((prover.proof(token=token),), token=token))
    assert verified.alg == alg and verified.jkt == prover.jkt


def test_DP_07_algorithms_come_from_the_policy() -> None:
    unit = make_unit(algorithms=["ES384"])
    prover = Prover.generate("ES384")
    token = unit.kit.token_for(prover.jkt)
    assert unit.run(Call((prover.proof(token=token),), token=token)).alg == "ES384"
    with pytest.raises(InvalidDPoPProof, match="ES384"):
        unit.run(Call((unit.kit.prover.proof(token=unit.kit.token),)))


def test_DP_14_a_proof_is_accepted_once(unit: Unit) -> None:
    call = Call((unit.kit.prover.proof(token=unit.kit.token),))
    unit.run(call)
    with pytest.raises(InvalidDPoPProof) as raised:
        unit.run(call)
    assert raised.value.failure == "replayed_proof"
    # the jti is remembered for the whole window in which the proof is acceptable
    assert unit.verifier.replay_seconds == 300 + 2 * 30


def test_DP_14_a_refused_proof_does_not_burn_its_jti(unit: Unit) -> None:
    jti = "reused-after-a-refusal"
    with pytest.raises(InvalidDPoPProof):
        unit.run(Call((unit.kit.prover.proof(token=unit.kit.token, htm="GET", jti=jti),)))
    unit.run(Call((unit.kit.prover.proof(token=unit.kit.token, jti=jti),)))


def test_DP_14_jti_is_per_resource_and_key(unit: Unit) -> None:
    """The same jti from another key, or at another resource, is another proof."""
    jti = "same-jti"
    unit.run(Call((unit.kit.prover.proof(token=unit.kit.token, jti=jti),)))
    other_token = unit.kit.token_for(unit.kit.other.jkt)
    unit.run(Call((unit.kit.other.proof(token=other_token, jti=jti),), token=other_token))
    elsewhere = DPoPVerifier(resource(id="other"), unit.replay, unit.clock)
    unit.run(Call((unit.kit.prover.proof(token=unit.kit.token, jti=jti),)), verifier=elsewhere)


def test_DP_14_replay_store_down_fails_closed(unit: Unit) -> None:
    class Down(MemoryReplayCache):
        async def first_use(self, parts: tuple[str, ...], ttl_seconds: int) -> bool:
            raise ReplayCacheUnavailable("the shared nonce cache cannot be reached")

    verifier = DPoPVerifier(resource(), Down(unit.clock), unit.clock)
    with pytest.raises(DependencyUnavailable) as raised:
        unit.run(Call((unit.kit.prover.proof(token=unit.kit.token),)), verifier=verifier)
    assert raised.value.status == 503 and raised.value.body()["reason"] == "replay_cache_unavailable"


def test_DP_12_iat_window_follows_the_clock(unit: Unit) -> None:
    call = Call((unit.kit.prover.proof(token=unit.kit.token),))
    unit.clock.advance(331)  # max_age 300 + skew 30, and a second
    with pytest.raises(InvalidDPoPProof) as raised:
        unit.run(call)
    assert raised.value.failure == "too_old"


def test_DP_10_htu_is_the_public_origin_not_the_host_header(unit: Unit) -> None:
    """The expected URI comes from configuration: a proof made for whatever Host says is refused."""
    verifier = DPoPVerifier(resource(public_origin="https://public.example.test:8443"), unit.replay, unit.clock)
    good = Call((unit.kit.prover.proof(url="https://PUBLIC.example.test:8443" + PATH, token=unit.kit.token),))
    unit.run(good, verifier=verifier)
    for url in (URL, f"http://internal.test:9000{PATH}"):
        forged = Call((unit.kit.prover.proof(url=url, token=unit.kit.token),))
        token = unit.kit.token
        with pytest.raises(InvalidDPoPProof) as raised:
            asyncio.run(verifier.verify(request(forged, token, host=url.split("/")[2]), token, True,
                                        principal(unit.kit.prover.jkt)))
        assert raised.value.failure == "uri_mismatch"


@pytest.mark.parametrize(("uri", "expected"), [
    ("https://Example.TEST/a", "https://example.test/a"),
    ("HTTPS://example.test:443/a?q#f", "https://example.test/a"),
    ("http://example.test:80", "http://example.test/"),
    ("http://example.test:8080/%7euser/%2f", "http://example.test:8080/~user/%2F"),
    ("https://[::1]:8443/x", "https://[::1]:8443/x"),
    ("https://example.test/caf\u00e9", "https://example.test/caf%C3%A9"),
    ("https://user@example.test/a", None),
    ("ftp://example.test/a", None),
    ("https://example.test:99999/a", None),
    ("/a", None),
])
def test_DP_10_uri_normalisation(uri: str, expected: str | None) -> None:
    assert normalized_uri(uri) == expected


def test_DP_10_request_path_is_normalised_too() -> None:
    unit = make_unit()
    call = Call((unit.kit.prover.proof(url=f"{PUBLIC_ORIGIN}/mcp/caf\u00e9", token=unit.kit.token),),
                path="/mcp/caf%c3%a9")
    assert unit.run(call).jkt == unit.kit.prover.jkt


# -- DP-02: binding and scheme ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["required", "allowed"])
def test_DP_02_bound_token_sent_as_bearer_is_refused(mode: str) -> None:
    unit = make_unit(dpop=mode)
    with pytest.raises(DPoPInvalidToken) as raised:
        unit.run(Call((unit.kit.prover.proof(token=unit.kit.token),)), scheme="Bearer")
    assert "never as Bearer" in raised.value.description and raised.value.dpop_scheme


def test_DP_02_allowed_takes_bearer_for_unbound_tokens_and_skips_the_proof() -> None:
    unit = make_unit(dpop="allowed")
    token = "unbound.token.value"
    assert asyncio.run(unit.verifier.verify(request(Call(()), token, scheme="Bearer"), token, False,
                                            principal(None))) is None


@pytest.mark.parametrize("mode", ["required", "allowed"])
def test_DP_01_dpop_scheme_needs_a_bound_token(mode: str) -> None:
    unit = make_unit(dpop=mode)
    token = "unbound.token.value"
    call = Call((unit.kit.prover.proof(token=token),))
    with pytest.raises(DPoPInvalidToken, match="no cnf.jkt"):
        asyncio.run(unit.verifier.verify(request(call, token), token, True, principal(None)))


def test_DP_02_off_refuses_a_bound_token_unless_signatures_prove_its_key() -> None:
    bound = principal("A" * 43)
    with pytest.raises(InvalidToken) as raised:
        check_bearer_binding(bound, resource(dpop="off"))
    assert not raised.value.dpop_scheme  # a resource without DPoP does not advertise it
    check_bearer_binding(principal(None, {"x5t#S256": "B" * 43}), resource(dpop="off"))  # not a DPoP binding
    signed = resource(dpop="off", signatures={"keys": {"from_token_cnf": True}})
    check_bearer_binding(bound, signed)  # required signatures with the token's key prove possession
    optional = resource(dpop="off", signatures={"required": False, "keys": {"from_token_cnf": True}})
    with pytest.raises(InvalidToken):
        check_bearer_binding(bound, optional)


@pytest.mark.parametrize("cnf", [
    "a string", ["jkt"], {"jkt": 1}, {"jkt": "short"}, {"jkt": "A" * 42 + "="}, {"jkt": None},
])
def test_DP_16_malformed_cnf_is_an_invalid_token(cnf: Any) -> None:
    with pytest.raises(InvalidToken):
        check_cnf(cnf)


def test_DP_16_cnf_is_carried() -> None:
    assert check_cnf({"jkt": "A" * 43, "x5t#S256": "B" * 43}) == {"jkt": "A" * 43, "x5t#S256": "B" * 43}
    assert check_cnf(None) is None


# -- extraction by mode (DP-01) ------------------------------------------------------------------------


def _headers(value: str | None) -> RequestInfo:
    headers = ((b"authorization", value.encode()),) if value is not None else ()
    return RequestInfo("GET", b"/mcp", b"", headers)


@pytest.mark.parametrize(("mode", "value", "expected"), [
    ("off", "Bearer abc", ("abc", False)),
    ("off", "DPoP abc", MissingToken),
    ("allowed", "Bearer abc", ("abc", False)),
    ("allowed", "DPoP abc", ("abc", True)),
    ("allowed", "dpop abc", ("abc", True)),
    ("allowed", "Basic abc", MissingToken),
    ("required", "DPoP abc", ("abc", True)),
    ("required", "Bearer abc", DPoPInvalidToken),
    ("required", "Basic abc", MissingToken),
    ("required", None, MissingToken),
    ("required", "DPoP", InvalidRequest),
    ("required", "DPoP a b", InvalidRequest),
    ("allowed", "Bearer", InvalidRequest),
])
def test_DP_01_authorization_schemes_by_mode(mode: str, value: str | None, expected: Any) -> None:
    if isinstance(expected, tuple):
        assert access_token(_headers(value), mode) == expected
    else:
        with pytest.raises(expected):
            access_token(_headers(value), mode)


# -- DP-11 / DP-15: server nonces --------------------------------------------------------------------


def test_DP_15_missing_nonce_is_answered_with_one() -> None:
    unit = make_unit(require_nonce=True)
    with pytest.raises(UseDPoPNonce) as raised:
        unit.run(Call((unit.kit.prover.proof(token=unit.kit.token),)))
    error = raised.value
    assert error.status == 401 and error.body()["error"] == "use_dpop_nonce" and error.dpop_scheme
    (name, nonce), = error.extra_headers()
    assert name == b"dpop-nonce" and len(nonce) == 32
    verified = unit.run(Call((unit.kit.prover.proof(token=unit.kit.token, nonce=nonce.decode()),)))
    assert verified.jkt == unit.kit.prover.jkt


def test_DP_11_nonce_lasts_one_to_two_windows() -> None:
    unit = make_unit(require_nonce=True, max_age_seconds=60)
    assert unit.verifier.nonces is not None
    unit.clock.now = 6000.0  # the start of a window
    nonce = unit.verifier.nonces.current()
    unit.clock.advance(119)  # still the next window: the previous window's nonce is accepted
    unit.run(Call((unit.kit.prover.proof(token=unit.kit.token, nonce=nonce, iat=int(unit.clock.now)),)))
    unit.clock.advance(1)  # two windows on: expired
    with pytest.raises(UseDPoPNonce) as raised:
        unit.run(Call((unit.kit.prover.proof(token=unit.kit.token, nonce=nonce, iat=int(unit.clock.now)),)))
    assert raised.value.nonce != nonce and "expired" in raised.value.description


@pytest.mark.parametrize("nonce", ["", "x" * 32, 12345, "n" * 1000])
def test_DP_11_unknown_nonce_is_refused(nonce: Any) -> None:
    unit = make_unit(require_nonce=True)
    with pytest.raises(UseDPoPNonce):
        unit.run(Call((unit.kit.prover.proof(token=unit.kit.token, nonce=nonce),)))


def test_DP_11_nonces_are_per_resource_and_key() -> None:
    clock = FrozenClock(1000.0)
    a, b = NonceIssuer(b"k" * 32, clock, "a", 60), NonceIssuer(b"k" * 32, clock, "b", 60)
    assert a.valid(a.current()) and not b.valid(a.current())
    assert not NonceIssuer(b"j" * 32, clock, "a", 60).valid(a.current())


# -- challenges, metadata, forwarding (DP-01, DP-17) -----------------------------------------------------


def test_DP_01_challenges_by_mode() -> None:
    metadata = "https://mcp.example.test/.well-known/oauth-protected-resource/mcp"
    algs = 'algs="ES256 EdDSA PS256 RS256"'
    required, allowed, off = resource(), resource(dpop="allowed"), resource(dpop="off")
    missing = MissingToken("send a token")
    assert challenge(missing, required) == \
        f'DPoP {algs}, resource_metadata="{metadata}", scope="tools:read"'
    assert challenge(missing, allowed) == \
        f'Bearer resource_metadata="{metadata}", scope="tools:read", DPoP {algs}'
    assert challenge(missing, off) == f'Bearer resource_metadata="{metadata}", scope="tools:read"'
    proof = InvalidDPoPProof("bad proof", failure="bad_signature")
    assert challenge(proof, allowed) == \
        f'DPoP error="invalid_dpop_proof", error_description="bad proof", {algs}, resource_metadata="{metadata}"'
    assert challenge(InvalidToken("expired"), allowed).startswith('Bearer error="invalid_token"')
    assert challenge(InvalidToken("expired"), required).startswith('DPoP error="invalid_token"')
    assert challenge(DPoPInvalidToken("bound"), allowed).startswith('DPoP error="invalid_token"')
    nonce = UseDPoPNonce("need a nonce", nonce="n" * 32)
    assert challenge(nonce, required).startswith('DPoP error="use_dpop_nonce", error_description="need a nonce", ')


def test_DP_17_metadata_advertises_dpop() -> None:
    issuers = {"test": Issuer(id="test", issuer="https://issuer.test", jwks_uri="https://issuer.test/jwks")}
    required = metadata_document(resource(dpop_options={"algorithms": ["ES256", "EdDSA"]}), issuers)
    assert required["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]
    assert required["dpop_bound_access_tokens_required"] is True
    allowed = metadata_document(resource(dpop="allowed"), issuers)
    assert allowed["dpop_signing_alg_values_supported"] == list(DEFAULT_ALGS)
    assert allowed["dpop_bound_access_tokens_required"] is False
    off = metadata_document(resource(dpop="off"), issuers)
    assert "dpop_signing_alg_values_supported" not in off and "dpop_bound_access_tokens_required" not in off


def test_the_proof_is_not_forwarded_unless_the_token_is() -> None:
    headers = [(b"authorization", b"DPoP t"), (b"dpop", b"proof"), (b"accept", b"*/*")]
    assert [name for name, _ in upstream_request_headers(headers, forward_token=False)] == ["accept"]
    assert [name for name, _ in upstream_request_headers(headers, forward_token=True)] == \
        ["authorization", "dpop", "accept"]


def test_errors_never_echo_the_proof(unit: Unit) -> None:
    proof = unit.kit.prover.proof(token=unit.kit.token, htm="GET")
    with pytest.raises(EnforcerError) as raised:
        unit.run(Call((proof,)))
    text = json.dumps(raised.value.body())
    for part in proof.split("."):
        assert part not in text


# -- the policy keys ---------------------------------------------------------------------------------


POLICY = """version: 1
issuers:
  - id: test
    issuer: https://issuer.test
    jwks_uri: https://issuer.test/jwks
resources:
  - id: demo
    resource: https://mcp.example.test/mcp
    upstream: http://127.0.0.1:9/mcp
    issuers: [test]
{extra}"""


@pytest.mark.parametrize(("extra", "expected"), [
    ("    dpop: on", ["invalid_value: resources[0].dpop: must be 'required', 'allowed' or 'off', got the string 'on'"]),
    ("    dpop: required\n    dpop_options: {algorithms: [ES256, HS256, none, es256]}",
     ["unsafe_algorithm: resources[0].dpop_options.algorithms[1]: 'HS256' is never accepted for DPoP proofs",
      "unsafe_algorithm: resources[0].dpop_options.algorithms[2]: 'none' is never accepted for DPoP proofs",
      "unknown_algorithm: resources[0].dpop_options.algorithms[3]: 'es256' is not one of"]),
    ("    dpop: allowed\n    dpop_options: {algorithms: []}",
     ["invalid_value: resources[0].dpop_options.algorithms: list at least one algorithm"]),
    ("    dpop_options: {max_age_seconds: 0}", ["max_age_seconds"]),
    ("    dpop_options: {require_nonce: yes}", ["require_nonce"]),
    ("    dpop_options: {nonce: true}", ["nonce"]),
])
def test_policy_refuses_bad_dpop_settings(tmp_path: Any, extra: str, expected: list[str]) -> None:
    from enforcer.policy.loader import PolicyLoadError, load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(extra=extra))
    with pytest.raises(PolicyLoadError) as raised:
        load_policy([path])
    text = str(raised.value)
    for fragment in expected:
        assert fragment in text, text


def test_policy_defaults(tmp_path: Any) -> None:
    from enforcer.policy.loader import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(extra="    dpop: required"))
    (loaded,) = load_policy([path]).resources
    assert loaded.dpop == "required"
    assert loaded.dpop_options.algorithms == DEFAULT_ALGS
    assert (loaded.dpop_options.max_age_seconds, loaded.dpop_options.clock_skew_seconds) == (300, 30)
    assert loaded.dpop_options.require_nonce is False
    path.write_text(POLICY.format(extra=""))
    assert load_policy([path]).resources[0].dpop == "off"
