"""The RFC 9421 request vectors through ``SignatureVerifier`` itself, as a request reaches stage 6.

``test_httpsig_vectors.py`` checks the pieces (signature base, keys); here each request vector is
turned into the ``RequestInfo`` the proxy builds, the keys are served from a JWKS file, the clock is
frozen at the vector's time, and the whole section 3.2 procedure runs: field parsing, selection by
policy, parameter checks, key lookup by keyid, base, verification, Content-Digest and nonce.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from enforcer.auth import structured
from enforcer.auth.httpsig import SignatureVerifier, VerifiedSignature
from enforcer.auth.keys import SignatureKeyring
from enforcer.auth.replay import MemoryReplayCache
from enforcer.clock import FrozenClock
from enforcer.context import Principal, RequestInfo
from enforcer.errors import InvalidSignature
from enforcer.policy.model import SignatureKeys, Signatures

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
JOSE = {"ed25519": "EdDSA", "ecdsa-p256-sha256": "ES256", "rsa-pss-sha512": "PS512", "rsa-v1_5-sha256": "RS256",
        "hmac-sha256": "HS256"}
PRINCIPAL = Principal("test", "https://issuer.test", "alice", "agent-42", frozenset(), "jti", 0, "hash")


def _request_vectors() -> list[dict[str, Any]]:
    vectors = [json.loads(p.read_text()) for p in sorted((VECTORS / "rfc9421").glob("rfc9421-*.json"))]
    return [v for v in vectors if v["message"]["type"] == "request" and not v["name"].startswith("wimse")]


def _keys_file(tmp_path: Path, *, shared: bool) -> Path:
    """Every RFC 9421 test key, public halves (or the shared secret), with the algorithm each vector uses."""
    index = json.loads((VECTORS / "keys" / "index.json").read_text())
    keys = []
    for kid, files in index.items():
        if not kid.startswith("test-"):
            continue
        path = files.get("jwk") if kid == "test-shared-secret" else files["public_jwk"]
        jwk = json.loads((VECTORS / path).read_text())
        if (jwk["kty"] == "oct") != shared:
            continue
        if jwk["kty"] == "RSA":
            jwk["alg"] = "PS512" if kid == "test-key-rsa-pss" else "RS256"
        keys.append(jwk)
    target = tmp_path / ("secrets.json" if shared else "agents.json")
    target.write_text(json.dumps({"keys": keys}))
    return target


def _only(field: str, label: str) -> str:
    """The one member of a Signature / Signature-Input field that a vector is about."""
    members = structured.parse_dictionary(field)
    return structured.serialize_dictionary({label: members[label]})


def _request(vector: dict[str, Any]) -> RequestInfo:
    message = vector["message"]
    headers = [(name.lower(), value) for name, value in message["headers"]]
    headers += [("signature-input", _only(vector["signature_input"], vector["label"])),
                ("signature", _only(vector["signature"], vector["label"]))]
    path, _, query = message["request_target"].partition("?")
    return RequestInfo(message["method"], path.encode(), query.encode(),
                       tuple((name.encode(), value.encode()) for name, value in headers))


def _verify(vector: dict[str, Any], tmp_path: Path, *, public_origin: str | None = None,
            components: tuple[str, ...] = (), keys: SignatureKeys | None = None, tag: str | None = None,
            principal: Principal = PRINCIPAL, whole_fields: bool = False) -> VerifiedSignature | None:
    shared = vector["alg"] == "hmac-sha256"
    if keys is None:
        keys_file = _keys_file(tmp_path, shared=shared)
        keys = SignatureKeys(shared_secrets_file=str(keys_file)) if shared else SignatureKeys(jwks_file=str(keys_file))
    config = Signatures(components=components, max_age_seconds=60, keys=keys, tag=tag)
    created = int(vector["signature_input"].split("created=")[1].split(";")[0].split(",")[0])
    clock = FrozenClock(vector.get("verify_at") or created + 5)
    origin = urlsplit(public_origin or vector["message"]["url"])
    body = vector["message"].get("body", "").encode()
    request = _request(vector)
    if whole_fields:  # every signature the message carries, not only the vector's label
        request = RequestInfo(request.method, request.raw_path, request.query_string, tuple(
            (name, value) for name, value in request.headers if name not in (b"signature", b"signature-input")
        ) + ((b"signature-input", vector["signature_input"].encode()), (b"signature", vector["signature"].encode())))

    async def scenario() -> VerifiedSignature | None:
        async with httpx.AsyncClient() as http:
            keyring = SignatureKeyring("vectors", keys, config.algorithms, clock, http)
            for cache in keyring.caches:
                assert await cache.refresh("test"), cache.last_error
            verifier = SignatureVerifier(config, keyring, MemoryReplayCache(clock), clock, resource_id="vectors",
                                         public_scheme=origin.scheme, public_host=origin.netloc)

            async def read_body() -> bytes:
                return body

            return await verifier.verify(request, principal, request.has_body, read_body)

    return asyncio.run(scenario())


@pytest.mark.parametrize("vector", _request_vectors(), ids=lambda v: v["name"])
def test_MS_01_MS_07_request_vectors_through_the_verifier(vector: dict[str, Any], tmp_path: Path) -> None:
    if vector["expect"]["valid"]:
        accepted = _verify(vector, tmp_path)
        assert accepted is not None
        assert accepted.alg == vector["alg"]
        assert accepted.keyid == vector["key_id"]
    else:
        with pytest.raises(InvalidSignature) as refused:
            _verify(vector, tmp_path)
        assert refused.value.failure == "bad_signature"


def _vector(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / "rfc9421" / f"{name}.json").read_text())


def test_MS_31_two_signatures_the_one_that_verifies_is_chosen_not_the_first_label(tmp_path: Path) -> None:
    # After the proxy rewrote Host, the client's sig1 fails over the rewritten authority; the
    # proxy's own proxy_sig (a different key) still verifies and is the one accepted.
    accepted = _verify(_vector("rfc9421-4.3-proxy_sig"), tmp_path, whole_fields=True)
    assert accepted is not None and accepted.label == "proxy_sig" and accepted.alg == "rsa-v1_5-sha256"


def test_MS_34_authority_comes_from_the_public_origin_not_the_rewritten_host(tmp_path: Path) -> None:
    # The same message whose Host an intermediary rewrote: verified against the public origin the
    # client called, the client's signature holds, because Host is never read for @authority.
    vector = _vector("rfc9421-4.3-sig1-after-proxy-rewrite")
    with pytest.raises(InvalidSignature):
        _verify(vector, tmp_path)
    accepted = _verify(vector, tmp_path, public_origin="https://example.com")
    assert accepted is not None and accepted.label == "sig1"


def test_MS_27_policy_coverage_applies_to_vectors(tmp_path: Path) -> None:
    # B.2.1 covers nothing: a resource that requires @method refuses it (key possession alone
    # proves nothing about the request); B.2.6 covers @method and is accepted under the same policy.
    with pytest.raises(InvalidSignature) as refused:
        _verify(_vector("rfc9421-B.2.1-sig-b21"), tmp_path, components=("@method",))
    assert refused.value.failure == "missing_component"
    assert _verify(_vector("rfc9421-B.2.6-sig-b26"), tmp_path, components=("@method",)) is not None


def test_DG_04_covered_content_digest_is_checked_against_the_body(tmp_path: Path) -> None:
    # B.2.4 is a response; B.2.6's request covers no digest, so use 4.3 client sig1, which does.
    from enforcer.errors import InvalidDigest

    vector = _vector("rfc9421-4.3-client-sig1")
    assert _verify(vector, tmp_path) is not None
    vector["message"]["body"] = vector["message"]["body"].replace("world", "WORLD")
    with pytest.raises(InvalidDigest):
        _verify(vector, tmp_path)


def test_WH_05_wimse_request_signed_by_the_key_bound_to_the_token(tmp_path: Path) -> None:
    # The WIMSE profile sends no keyid and no alg: the key is the workload's cnf.jwk. With
    # from_token_cnf the verifier takes it from the verified token; another token's key fails.
    vector = _vector("rfc9421-profile-wimse-http-sig-request")
    wimse_key = json.loads((VECTORS / "keys" / "wimse-svc-a-key.pub.jwk.json").read_text())
    other_key = json.loads((VECTORS / "keys" / "wimse-svc-b-key.pub.jwk.json").read_text())
    bound = Principal("test", "https://issuer.test", "svc-a", "svc-a", frozenset(), "jti", 0, "hash",
                      claims={"cnf": {"jwk": wimse_key}})
    keys = SignatureKeys(from_token_cnf=True)
    accepted = _verify(vector, tmp_path, keys=keys, principal=bound, tag="wimse-workload-to-workload",
                       components=("@method", "@request-target"))
    assert accepted is not None and accepted.alg == "ed25519" and accepted.keyid is None
    assert accepted.tag == "wimse-workload-to-workload" and accepted.nonce
    stolen = Principal("test", "https://issuer.test", "svc-b", "svc-b", frozenset(), "jti", 0, "hash",
                       claims={"cnf": {"jwk": other_key}})
    with pytest.raises(InvalidSignature) as refused:
        _verify(vector, tmp_path, keys=keys, principal=stolen)
    assert refused.value.failure == "bad_signature"
