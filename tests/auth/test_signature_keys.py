"""Request-signature keys (``enforcer.auth.keys``): which JWKs load and bound to which RFC 9421 algorithm
(MS-04, MS-05, MS-07, MS-15), and what ``SignatureKey.verify`` accepts for each algorithm: exact raw
ECDSA ``r||s`` with r and s in range (MS-12, MS-13), HMAC (MS-08, MS-11), RSA-PSS with a 64-byte salt
(MS-09), RSA PKCS#1 v1.5 (MS-10) and Ed25519 (MS-14). Keys are the RFC 9421 test keys from
``tests/data/vectors/keys`` or generated here."""

from __future__ import annotations

import hashlib
import hmac
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, OctKey, RSAKey

from enforcer.auth.keys import JOSE_TO_RFC9421, SignatureKey, parse_signature_jwks, signature_key

KEYS = Path(__file__).resolve().parent.parent / "data" / "vectors" / "keys"
ALL = ("ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512", "rsa-v1_5-sha256", "hmac-sha256")
BASE = b'"@method": POST\n"@signature-params": ("@method");created=1618884473;keyid="k"'

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P384_ORDER = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
                 "581A0DB248B0A77AECEC196ACCC52973", 16)


def vector_jwk(name: str, **extra: Any) -> dict[str, Any]:
    return {**json.loads((KEYS / name).read_text()), **extra}


def p256_pub(**extra: Any) -> dict[str, Any]:
    return vector_jwk("test-key-ecc-p256.pub.jwk.json", **extra)


def ed_pub(**extra: Any) -> dict[str, Any]:
    return vector_jwk("test-key-ed25519.pub.jwk.json", **extra)


def rsa_pub(**extra: Any) -> dict[str, Any]:
    return vector_jwk("test-key-rsa.pub.jwk.json", **extra)


def pss_pub(**extra: Any) -> dict[str, Any]:
    return vector_jwk("test-key-rsa-pss.pub.jwk.json", **extra)


def private_pem(name: str) -> Any:
    return serialization.load_pem_private_key((KEYS / name).read_bytes(), password=None)


def ec_jwk(curve: ec.EllipticCurve, **extra: Any) -> dict[str, Any]:
    public = ec.generate_private_key(curve).public_key()
    return {**ECKey.import_key(public).as_dict(private=False), **extra}


def weak_rsa_jwk() -> dict[str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (too short on purpose)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {**RSAKey.import_key(private.public_key()).as_dict(private=False), "alg": "RS256"}


def oct_jwk(size: int) -> dict[str, Any]:
    return {**OctKey.import_key(b"s" * size).as_dict(), "kid": f"secret-{size}"}


# -- which JWKs load ------------------------------------------------------------------------

LOADS = [
    pytest.param(lambda: vector_jwk("test-key-ecc-p256.pub.jwk.json"), "ecdsa-p256-sha256", id="p256-by-curve"),
    pytest.param(lambda: vector_jwk("test-key-ecc-p256.pub.jwk.json", alg="ES256"), "ecdsa-p256-sha256",
                 id="p256-with-ES256"),
    pytest.param(lambda: ec_jwk(ec.SECP384R1()), "ecdsa-p384-sha384", id="p384-by-curve"),
    pytest.param(lambda: ec_jwk(ec.SECP384R1(), alg="ES384"), "ecdsa-p384-sha384", id="p384-with-ES384"),
    pytest.param(lambda: vector_jwk("test-key-ed25519.pub.jwk.json"), "ed25519", id="ed25519-by-curve"),
    pytest.param(lambda: vector_jwk("test-key-ed25519.pub.jwk.json", alg="EdDSA"), "ed25519", id="ed25519-EdDSA"),
    pytest.param(lambda: vector_jwk("test-key-ed25519.pub.jwk.json", alg="Ed25519"), "ed25519",
                 id="ed25519-fully-specified"),
    pytest.param(lambda: vector_jwk("test-key-rsa-pss.pub.jwk.json", alg="PS512"), "rsa-pss-sha512", id="rsa-PS512"),
    pytest.param(lambda: vector_jwk("test-key-rsa.pub.jwk.json", alg="RS256"), "rsa-v1_5-sha256", id="rsa-RS256"),
    pytest.param(lambda: vector_jwk("test-key-ecc-p256.pub.jwk.json", use="sig"), "ecdsa-p256-sha256",
                 id="use-sig"),
]


@pytest.mark.parametrize(("make", "alg"), LOADS)
def test_MS_05_key_is_bound_to_one_algorithm(make, alg):
    jwk = make()
    key = signature_key(jwk, ALL)
    assert key.alg == alg
    assert key.kid == jwk.get("kid", "")


NO_EQUIVALENT = "no RFC 9421 equivalent"
X25519 = {"kty": "OKP", "crv": "X25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}

REFUSED = [
    pytest.param(lambda: pss_pub(), ALL, "must state alg", id="rsa-without-alg"),
    pytest.param(weak_rsa_jwk, ALL, "shorter than 2048", id="rsa-1024-bits"),
    pytest.param(lambda: ed_pub(alg="ES256"), ALL, "does not fit", id="ES256-on-okp"),
    pytest.param(lambda: p256_pub(alg="ES384"), ALL, "does not fit", id="ES384-on-p256"),
    pytest.param(lambda: p256_pub(alg="EdDSA"), ALL, "does not fit", id="EdDSA-on-ec"),
    pytest.param(lambda: p256_pub(alg="PS512"), ALL, "does not fit", id="PS512-on-ec"),
    pytest.param(lambda: rsa_pub(alg="ES256"), ALL, "does not fit", id="ES256-on-rsa"),
    pytest.param(lambda: rsa_pub(alg="HS256"), ALL, "does not fit", id="HS256-on-rsa"),
    pytest.param(lambda: ec_jwk(ec.SECP384R1(), alg="ES256"), ALL, "does not fit", id="ES256-on-p384"),
    pytest.param(lambda: vector_jwk("test-key-ecc-p256.priv.jwk.json"), ALL, "private key", id="ec-private-d"),
    pytest.param(lambda: vector_jwk("test-key-rsa.priv.jwk.json", alg="RS256"), ALL, "private key", id="rsa-private"),
    pytest.param(lambda: vector_jwk("test-key-ed25519.priv.jwk.json"), ALL, "private key", id="okp-private-d"),
    pytest.param(lambda: vector_jwk("test-shared-secret.jwk.json"), ALL, "shared secrets", id="oct-not-shared-secret"),
    pytest.param(lambda: p256_pub(), ("ed25519",), "not allowed", id="alg-not-allowed"),
    pytest.param(lambda: rsa_pub(alg="RS256"), ("rsa-pss-sha512",), "not allowed", id="RS256-not-allowed"),
    pytest.param(lambda: ec_jwk(ec.SECP521R1()), ALL, "curve", id="p521-curve"),
    pytest.param(lambda: ec_jwk(ec.SECP521R1(), alg="ES512"), ALL, NO_EQUIVALENT, id="ES512"),
    pytest.param(lambda: p256_pub(alg="ES512"), ALL, NO_EQUIVALENT, id="ES512-on-p256"),
    pytest.param(lambda: rsa_pub(alg="PS256"), ALL, NO_EQUIVALENT, id="PS256"),
    pytest.param(lambda: rsa_pub(alg="none"), ALL, NO_EQUIVALENT, id="alg-none"),
    pytest.param(lambda: rsa_pub(alg="rsa-v1_5-sha256"), ALL, NO_EQUIVALENT, id="rfc9421-name-as-jwk-alg"),
    pytest.param(lambda: p256_pub(use="enc"), ALL, "use is not", id="use-enc"),
    pytest.param(lambda: dict(X25519), ALL, "curve", id="x25519"),
    pytest.param(lambda: {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, ALL, "curve", id="ec-not-on-curve"),
    pytest.param(lambda: "not a jwk", ALL, "not an object", id="not-an-object"),
]


@pytest.mark.parametrize(("make", "allowed", "reason"), REFUSED)
@pytest.mark.filterwarnings("ignore:Key size should be")
def test_MS_04_MS_15_unusable_keys_are_refused(make, allowed, reason):
    with pytest.raises(ValueError, match=reason):
        signature_key(make(), allowed)


def test_MS_11_oct_keys_only_as_shared_secrets():
    secret = vector_jwk("test-shared-secret.jwk.json")
    assert signature_key(secret, ALL, shared_secret=True).alg == "hmac-sha256"
    assert signature_key(oct_jwk(32), ALL, shared_secret=True).alg == "hmac-sha256"
    with pytest.raises(ValueError):
        signature_key(oct_jwk(31), ALL, shared_secret=True)  # shorter than 32 bytes
    with pytest.raises(ValueError):
        signature_key(secret, ("ed25519",), shared_secret=True)  # hmac not allowed here
    with pytest.raises(ValueError):
        signature_key(vector_jwk("test-key-ecc-p256.pub.jwk.json"), ALL, shared_secret=True)


def test_MS_15_jose_names_map_to_rfc9421_names():
    assert JOSE_TO_RFC9421["EdDSA"] == "ed25519"
    assert JOSE_TO_RFC9421["ES256"] == "ecdsa-p256-sha256"
    assert JOSE_TO_RFC9421["ES384"] == "ecdsa-p384-sha384"
    assert JOSE_TO_RFC9421["PS512"] == "rsa-pss-sha512"
    assert JOSE_TO_RFC9421["RS256"] == "rsa-v1_5-sha256"
    assert JOSE_TO_RFC9421["HS256"] == "hmac-sha256"
    assert "ES512" not in JOSE_TO_RFC9421 and "none" not in JOSE_TO_RFC9421


def test_MS_04_key_set_keeps_usable_keys_by_kid_and_says_why_others_were_skipped():
    good = vector_jwk("test-key-ecc-p256.pub.jwk.json", kid="k1")
    document = {"keys": [
        good,
        vector_jwk("test-key-rsa.pub.jwk.json", kid="k2"),        # RSA without alg
        vector_jwk("test-key-ed25519.pub.jwk.json", kid="k1"),    # kid taken
        {k: v for k, v in vector_jwk("test-key-ed25519.pub.jwk.json").items() if k != "kid"},  # no kid
    ]}
    keys, skipped = parse_signature_jwks(json.dumps(document).encode(), ALL)
    assert list(keys) == ["k1"]
    assert keys["k1"].alg == "ecdsa-p256-sha256"
    assert len(skipped) == 3
    assert skipped[0].startswith("key 1:")


# -- ECDSA: raw r||s only, r and s in range --------------------------------------------------


def ecdsa_case(curve: ec.EllipticCurve, digest: hashes.HashAlgorithm) -> tuple[SignatureKey, bytes, bytes, int]:
    """A key, its DER signature over BASE, the same signature as raw r||s, and the coordinate size."""
    private = ec.generate_private_key(curve)
    key = signature_key(ECKey.import_key(private.public_key()).as_dict(private=False), ALL)
    der = private.sign(BASE, ec.ECDSA(digest))
    r, s = decode_dss_signature(der)
    size = (curve.key_size + 7) // 8
    return key, der, r.to_bytes(size, "big") + s.to_bytes(size, "big"), size


CURVES = [
    pytest.param(ec.SECP256R1(), hashes.SHA256(), P256_ORDER, "ecdsa-p256-sha256", id="MS-12-p256"),
    pytest.param(ec.SECP384R1(), hashes.SHA384(), P384_ORDER, "ecdsa-p384-sha384", id="MS-13-p384"),
]


@pytest.mark.parametrize(("curve", "digest", "order", "alg"), CURVES)
def test_MS_12_MS_13_raw_signature_verifies(curve, digest, order, alg):
    key, _, raw, size = ecdsa_case(curve, digest)
    assert key.alg == alg
    assert len(raw) == 2 * size
    assert key.verify(raw, BASE) is True
    assert key.verify(raw, BASE + b" ") is False


@pytest.mark.parametrize(("curve", "digest", "order", "alg"), CURVES)
def test_MS_12_MS_13_der_signature_is_refused(curve, digest, order, alg):
    key, der, raw, _ = ecdsa_case(curve, digest)
    assert len(der) != len(raw)
    assert key.verify(der, BASE) is False


@pytest.mark.parametrize(("curve", "digest", "order", "alg"), CURVES)
def test_MS_12_MS_13_wrong_lengths_are_refused(curve, digest, order, alg):
    key, _, raw, size = ecdsa_case(curve, digest)
    for signature in (raw[:-1], raw + b"\x00", b"\x00" + raw, raw[:size], b"", raw + raw):
        assert key.verify(signature, BASE) is False, len(signature)


@pytest.mark.parametrize(("curve", "digest", "order", "alg"), CURVES)
def test_MS_12_MS_13_r_and_s_out_of_range_are_refused(curve, digest, order, alg):
    key, _, raw, size = ecdsa_case(curve, digest)
    r, s = raw[:size], raw[size:]
    zero, n = bytes(size), order.to_bytes(size, "big")
    top = (2 ** (8 * size) - 1).to_bytes(size, "big")
    for signature in (zero + s, r + zero, zero + zero, n + s, r + n, n + n, top + s, r + top):
        assert key.verify(signature, BASE) is False


def test_MS_12_signature_from_another_p256_key_fails():
    key, _, _, _ = ecdsa_case(ec.SECP256R1(), hashes.SHA256())
    _, _, other_raw, _ = ecdsa_case(ec.SECP256R1(), hashes.SHA256())
    assert key.verify(other_raw, BASE) is False


# -- HMAC, RSA and Ed25519 -------------------------------------------------------------------


def flipped(signature: bytes, index: int = 0) -> bytes:
    changed = bytearray(signature)
    changed[index] ^= 0x80
    return bytes(changed)


def test_MS_08_MS_11_hmac_sha256():
    jwk = vector_jwk("test-shared-secret.jwk.json")
    key = signature_key(jwk, ALL, shared_secret=True)
    secret = OctKey.import_key(jwk).raw_value
    mac = hmac.new(secret, BASE, hashlib.sha256).digest()
    assert key.verify(mac, BASE) is True
    for index in (0, 15, 31):
        assert key.verify(flipped(mac, index), BASE) is False
    assert key.verify(mac[:16], BASE) is False
    assert key.verify(hmac.new(secret[:-1] + b"x", BASE, hashlib.sha256).digest(), BASE) is False
    assert key.verify(hmac.new(secret, BASE, hashlib.sha512).digest(), BASE) is False


def pss(salt_length: int) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=salt_length)


def test_MS_09_rsa_pss_sha512_needs_a_64_byte_salt():
    private = private_pem("test-key-rsa-pss.priv.pem")
    key = signature_key(vector_jwk("test-key-rsa-pss.pub.jwk.json", alg="PS512"), ALL)
    assert key.verify(private.sign(BASE, pss(64), hashes.SHA512()), BASE) is True
    assert key.verify(private.sign(BASE, pss(32), hashes.SHA512()), BASE) is False
    assert key.verify(private.sign(BASE, pss(padding.PSS.MAX_LENGTH), hashes.SHA512()), BASE) is False
    assert key.verify(private.sign(BASE, padding.PKCS1v15(), hashes.SHA512()), BASE) is False
    assert key.verify(flipped(private.sign(BASE, pss(64), hashes.SHA512())), BASE) is False


def test_MS_10_rsa_v1_5_sha256():
    private = private_pem("test-key-rsa.priv.pem")
    key = signature_key(vector_jwk("test-key-rsa.pub.jwk.json", alg="RS256"), ALL)
    signature = private.sign(BASE, padding.PKCS1v15(), hashes.SHA256())
    assert key.verify(signature, BASE) is True
    assert key.verify(flipped(signature, 100), BASE) is False
    assert key.verify(private.sign(BASE, padding.PKCS1v15(), hashes.SHA512()), BASE) is False
    assert key.verify(private.sign(BASE, pss(32), hashes.SHA256()), BASE) is False


def test_MS_14_ed25519():
    private = private_pem("test-key-ed25519.priv.pem")
    key = signature_key(vector_jwk("test-key-ed25519.pub.jwk.json"), ALL)
    signature = private.sign(BASE)
    assert key.verify(signature, BASE) is True
    assert key.verify(flipped(signature, 40), BASE) is False
    assert key.verify(signature[:-1], BASE) is False
    assert key.verify(signature, BASE[:-1]) is False


@pytest.mark.parametrize("garbage", [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00", id="one-byte"),
    pytest.param(b"\xff" * 16, id="16-bytes"),
    pytest.param(b"\x00" * 512, id="512-zero-bytes"),
])
def test_MS_07_verify_never_raises(garbage):
    keys = [
        signature_key(vector_jwk("test-key-ecc-p256.pub.jwk.json"), ALL),
        signature_key(vector_jwk("test-key-ed25519.pub.jwk.json"), ALL),
        signature_key(vector_jwk("test-key-rsa-pss.pub.jwk.json", alg="PS512"), ALL),
        signature_key(vector_jwk("test-key-rsa.pub.jwk.json", alg="RS256"), ALL),
        signature_key(vector_jwk("test-shared-secret.jwk.json"), ALL, shared_secret=True),
    ]
    for key in keys:
        assert key.verify(garbage, BASE) is False, key.alg
