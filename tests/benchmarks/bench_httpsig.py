"""What verifying one request signature costs, next to the bare cryptographic verify.

Not a pytest test. Run from the project directory:

    .venv/bin/python tests/benchmarks/bench_httpsig.py [--iterations N]

For each RFC 9421 algorithm it times, in this one process:

* bare     the ``cryptography`` verify call alone over a typical signature base;
* full     ``SignatureVerifier.verify`` on a signed request as the enforcer receives it: parsing
           both fields, selection by policy, parameter checks, key lookup, rebuilding the
           signature base over six components, the verify, and the Content-Digest check;
* library  ``http_message_signatures.HTTPMessageVerifier`` on the same request, for reference.

and reports full/bare and library/bare. Target: full <= 1.6x bare for ed25519 and ecdsa-p256-sha256,
the algorithms agents use; for the cheap RSA and HMAC verifies the ratio only shows the fixed cost
of the Python around them. bare and full are measured interleaved, medians of 7 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding  # noqa: E402
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey  # noqa: E402

from enforcer.auth.httpsig import SignatureVerifier  # noqa: E402
from enforcer.auth.keys import SignatureKeyring  # noqa: E402
from enforcer.auth.replay import MemoryReplayCache  # noqa: E402
from enforcer.clock import SystemClock  # noqa: E402
from enforcer.context import Principal, RequestInfo  # noqa: E402
from enforcer.devissuer import public_jwk  # noqa: E402
from enforcer.policy.model import SignatureKeys, Signatures  # noqa: E402
from enforcer.signing import SigningKey, sign_headers  # noqa: E402

ORIGIN = "https://mcp.example.test"
COMPONENTS = ("@method", "@target-uri", "@authority", "authorization", "content-digest", "content-type")
BODY = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                   "params": {"name": "search_docs", "arguments": {"query": "quarterly report", "limit": 10}}}).encode()
TARGET_RATIO = 1.6


def _keys() -> dict[str, dict]:
    return {
        "ed25519": OKPKey.generate_key("Ed25519", parameters={"kid": "k"}, private=True).as_dict(private=True),
        "ecdsa-p256-sha256": ECKey.generate_key("P-256", parameters={"kid": "k"}, private=True).as_dict(private=True),
        "ecdsa-p384-sha384": ECKey.generate_key("P-384", parameters={"kid": "k"}, private=True).as_dict(private=True),
        "rsa-pss-sha512": {**RSAKey.generate_key(2048, parameters={"kid": "k"}, private=True).as_dict(private=True),
                           "alg": "PS512"},
        "rsa-v1_5-sha256": {**RSAKey.generate_key(2048, parameters={"kid": "k"}, private=True).as_dict(private=True),
                            "alg": "RS256"},
        "hmac-sha256": OctKey.generate_key(256, parameters={"kid": "k"}).as_dict(private=True),
    }


def _per_call_us(fn, iterations: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        samples.append((time.perf_counter() - start) / iterations * 1e6)
    return statistics.median(samples)


def _bare(alg: str, key, base: bytes, signature: bytes):  # type: ignore[no-untyped-def]
    """The one cryptographic call, with the signature already in the form the library wants."""
    public = key.raw_value if alg == "hmac-sha256" else key.raw_value.public_key() \
        if hasattr(key.raw_value, "public_key") else key.raw_value
    if alg == "ed25519":
        return lambda: public.verify(signature, base)
    if alg.startswith("ecdsa"):
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
        size = len(signature) // 2
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
        algorithm = ec.ECDSA(hashes.SHA256() if alg.endswith("256") else hashes.SHA384())
        return lambda: public.verify(der, base, algorithm)
    if alg == "rsa-pss-sha512":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
        return lambda: public.verify(signature, base, pss, hashes.SHA512())
    if alg == "rsa-v1_5-sha256":
        return lambda: public.verify(signature, base, padding.PKCS1v15(), hashes.SHA256())
    from cryptography.hazmat.primitives import hmac as crypto_hmac

    def run() -> None:
        mac = crypto_hmac.HMAC(public, hashes.SHA256())
        mac.update(base)
        mac.verify(signature)
    return run


def measure(alg: str, jwk: dict, workdir: Path, iterations: int) -> tuple[float, float, float]:
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    headers = [("host", "mcp.example.test"), ("authorization", f"Bearer {token}"),
               ("content-type", "application/json"), ("content-length", str(len(BODY)))]
    signer = SigningKey.from_jwk(jwk)
    added = sign_headers(signer, "POST", f"{ORIGIN}/mcp?session=1", headers, BODY, components=COMPONENTS,
                         nonce=False)
    all_headers = headers + added
    request = RequestInfo("POST", b"/mcp", b"session=1",
                          tuple((k.lower().encode(), v.encode()) for k, v in all_headers))
    shared = alg == "hmac-sha256"
    path = workdir / f"{alg}.json"
    path.write_text(json.dumps({"keys": [jwk if shared else public_jwk(jwk)]}))
    keys = SignatureKeys(shared_secrets_file=str(path)) if shared else SignatureKeys(jwks_file=str(path))
    config = Signatures(components=COMPONENTS, max_age_seconds=3600, keys=keys)
    clock = SystemClock()
    loop = asyncio.new_event_loop()
    import httpx
    keyring = SignatureKeyring("bench", keys, config.algorithms, clock, httpx.AsyncClient())
    loop.run_until_complete(keyring.caches[0].refresh("bench"))
    verifier = SignatureVerifier(config, keyring, MemoryReplayCache(clock), clock, resource_id="bench",
                                 public_scheme="https", public_host="mcp.example.test")
    principal = Principal("i", "iss", "alice", "agent", frozenset(), "jti", 0, "hash")

    async def body() -> bytes:
        return BODY

    async def verify_many(n: int) -> None:
        for _ in range(n):
            await verifier.verify(request, principal, True, body)

    loop.run_until_complete(verify_many(10))  # raises if the request does not verify

    from enforcer.auth.sigbase import SignedMessage, headers_from_pairs, signature_base
    from enforcer.auth.structured import parse_dictionary
    message = SignedMessage(method="POST", scheme="https", authority="mcp.example.test", path="/mcp",
                            query="session=1", headers=headers_from_pairs(all_headers))
    members = parse_dictionary(dict(added)["Signature-Input"])
    base = signature_base(members["sig1"], message).encode()
    signature = parse_dictionary(dict(added)["Signature"])["sig1"].value
    key = {"OKP": OKPKey, "EC": ECKey, "RSA": RSAKey, "oct": OctKey}[jwk["kty"]].import_key(jwk)
    bare_call = _bare(alg, key, base, signature)
    bare_samples, full_samples = [], []
    for _ in range(7):  # interleaved, so a slow moment of the machine hits both sides
        start = time.perf_counter()
        for _ in range(iterations):
            bare_call()
        bare_samples.append((time.perf_counter() - start) / iterations * 1e6)
        start = time.perf_counter()
        loop.run_until_complete(verify_many(iterations))
        full_samples.append((time.perf_counter() - start) / iterations * 1e6)
    bare, full = statistics.median(bare_samples), statistics.median(full_samples)
    library = _library_us(alg, key, all_headers, iterations)
    return bare, full, library


def _library_us(alg: str, key, headers: list[tuple[str, str]], iterations: int) -> float:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    from http_message_signatures import HTTPMessageVerifier, HTTPSignatureKeyResolver, algorithms
    from http_message_signatures.structures import CaseInsensitiveDict

    classes = {"ed25519": algorithms.ED25519, "ecdsa-p256-sha256": algorithms.ECDSA_P256_SHA256,
               "ecdsa-p384-sha384": algorithms.ECDSA_P384_SHA384, "rsa-pss-sha512": algorithms.RSA_PSS_SHA512,
               "rsa-v1_5-sha256": algorithms.RSA_V1_5_SHA256, "hmac-sha256": algorithms.HMAC_SHA256}
    public = key.raw_value if alg == "hmac-sha256" else key.raw_value.public_key()

    class Resolver(HTTPSignatureKeyResolver):
        def resolve_public_key(self, key_id: str):  # type: ignore[no-untyped-def]
            return public

    message = SimpleNamespace(method="POST", url=f"{ORIGIN}/mcp?session=1", headers=CaseInsensitiveDict(headers))
    verifier = HTTPMessageVerifier(signature_algorithm=classes[alg], key_resolver=Resolver())
    return _per_call_us(lambda: verifier.verify(message, body=BODY), iterations)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    print("| algorithm | bare verify us | enforcer full check us | full/bare | library verify us | library/bare |")
    print("|---|---:|---:|---:|---:|---:|")
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for alg, jwk in _keys().items():
            bare, full, library = measure(alg, jwk, Path(tmp), args.iterations)
            lib = f"{library:.0f} | {library / bare:.2f}x" if library == library else "n/a | n/a"
            print(f"| {alg} | {bare:.1f} | {full:.1f} | {full / bare:.2f}x | {lib} |")
            if alg in ("ed25519", "ecdsa-p256-sha256") and full / bare > TARGET_RATIO:
                failures.append(alg)
    print()
    print(f"target: full check <= {TARGET_RATIO}x the bare verify for ed25519 and ecdsa-p256-sha256: "
          + ("PASS" if not failures else "FAIL " + ", ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
