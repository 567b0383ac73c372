"""The access-token attack table: STANDARDS.md section 13 (JA-01..JA-20, JB-*) and the
RFC 9068 / RFC 8707 checks of sections 1 and 2 (AT-*, RI-*).

Every row builds a real token with real keys (nothing is mocked) and names the checklist
item it exercises in its id. The same table runs twice:

* against ``TokenVerifier`` directly, with a ``FrozenClock`` (deterministic times, exact
  skew boundaries), asserting ``InvalidToken`` and *why* (so a row cannot pass because an
  earlier, unrelated check happened to refuse it), or a ``Principal`` for accepted rows;
* end to end through a real enforcer on 127.0.0.1 (``stack``), asserting the RFC 6750
  answer, that no token material is echoed, and that nothing reached the upstream.
  Accepted rows are the positive control there: they must reach the upstream.

Where a signature is part of the attack it is computed over the exact bytes sent (for
example the non-canonical base64url segments of JA-15), so a row is refused for the
reason it names, not because the signature happens to be wrong.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from joserfc import jwe
from joserfc.errors import SecurityWarning
from joserfc.jwk import OctKey, RSAKey
from joserfc.jws import JWSRegistry

from enforcer.auth.jwks import KeyCache
from enforcer.auth.keysources import FileKeySource
from enforcer.auth.tokens import TokenVerifier
from enforcer.clock import FrozenClock
from enforcer.context import Principal
from enforcer.errors import InvalidToken
from enforcer.policy.model import Issuer
from tests.conftest import Stack, start_stack
from tests.support import ISSUER, RESOURCE, SigningKey, b64url, claims, jwks, raw_token, sign

pytestmark = pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # the JA-12 1024-bit key

NOW = 1_760_000_000
SKEW = 30  # Issuer.clock_skew_seconds default; the stack's policy uses it too
ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")  # as in tests.support.basic_policy
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


# -- keys ----------------------------------------------------------------------------------


def _weak_rsa() -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (JA-12 on purpose)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return SigningKey(RSAKey.import_key(private), "RS256", "weak-rsa")


ES = SigningKey.generate("ES256", kid="k1")  # the stack's key
RS = SigningKey.generate("RS256", kid="rsa")  # published with alg RS256
PS = SigningKey.generate("PS256", kid="ps")  # published with alg PS256
RS_NOALG = SigningKey.generate("RS256", kid="rsa-noalg")  # published without alg: bound to RS256
ED = SigningKey.generate("EdDSA", kid="ed")
WEAK = _weak_rsa()  # published, skipped at load (JA-12)
ATTACKER = SigningKey.generate("ES256", kid="attacker")  # never published
OCT_SECRET = b"0123456789abcdef0123456789abcdef"  # published as an oct JWK, skipped at load


def jwks_document() -> dict[str, Any]:
    document = jwks(ES, RS, PS, ED, WEAK)
    document["keys"].append(RS_NOALG.public_jwk(with_alg=False))
    document["keys"].append({"kty": "oct", "kid": "oct", "alg": "HS256", "k": b64url(OCT_SECRET)})
    return document


# -- token builders --------------------------------------------------------------------------


def good(now: int, **overrides: Any) -> dict[str, Any]:
    """A valid claim set at ``now``; ``name=None`` drops a claim."""
    return claims(**{"iat": now, "exp": now + 600, **overrides})


def tok(now: int, key: SigningKey = ES, header: dict[str, Any] | None = None, **claim_overrides: Any) -> str:
    return sign(key, good(now, **claim_overrides), **(header or {}))


def rawtok(now: int, key: SigningKey = ES, header: dict[str, Any] | None = None, **claim_overrides: Any) -> str:
    """Like ``tok`` but signed by hand, for headers joserfc itself refuses to produce."""
    return sign_bytes(key, dumps(header_of(key, **(header or {}))), dumps(good(now, **claim_overrides)))


def header_of(key: SigningKey, **overrides: Any) -> dict[str, Any]:
    header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid, **overrides}
    return {k: v for k, v in header.items() if v is not None}


def _length_1_mod_4(segment: str) -> str:
    """Pad a base64url segment to a length of 1 mod 4, which no byte string encodes to
    (the payload's own length varies with its timestamps, so a fixed suffix is not enough)."""
    return segment + "A" * ((1 - len(segment)) % 4)


def sign_segments(key: SigningKey, header_segment: str, payload_segment: str) -> str:
    """Sign exactly ``header_segment.payload_segment`` (whatever characters they hold)."""
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    signature = JWSRegistry.algorithms[key.alg].sign(signing_input, key.key)
    return f"{header_segment}.{payload_segment}.{b64url(signature)}"


def sign_bytes(key: SigningKey, header: bytes, payload: bytes) -> str:
    return sign_segments(key, b64url(header), b64url(payload))


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def with_raw(obj: dict[str, Any], **literals: str) -> bytes:
    """JSON for ``obj`` with some members replaced by literal JSON text (``1e400``, ``NaN``)."""
    marked = {**obj, **{name: f"@@{name}@@" for name in literals}}
    text = json.dumps(marked)
    for name, literal in literals.items():
        text = text.replace(f'"@@{name}@@"', literal)
    return text.encode()


def with_duplicate(obj: dict[str, Any], name: str, value: Any) -> bytes:
    """JSON for ``obj`` followed by a second ``name`` member."""
    return (json.dumps(obj)[:-1] + f", {json.dumps(name)}: {json.dumps(value)}}}").encode()


def hmac_token(now: int, secret: bytes, kid: str | None = "rsa") -> str:
    header = {"alg": "HS256", "typ": "at+jwt", **({"kid": kid} if kid else {})}
    h, p = b64url(dumps(header)), b64url(dumps(good(now)))
    mac = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(mac)}"


def rsa_public(encoding: serialization.Encoding, fmt: serialization.PublicFormat) -> bytes:
    return RS.key.raw_value.public_key().public_bytes(encoding, fmt)


def es_signature(now: int, mutate: Callable[[int, int], bytes]) -> str:
    """A valid ES256 token whose signature is replaced by ``mutate(r, s)``."""
    h, p, s = tok(now).split(".")
    raw = base64.urlsafe_b64decode(s + "==")
    r, s_int = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    return f"{h}.{p}.{b64url(mutate(r, s_int))}"


def i32(value: int) -> bytes:
    return value.to_bytes(32, "big")


def slack(data: bytes, remainder: int) -> bytes:
    """Append JSON whitespace until ``len % 3 == remainder`` (so base64url has trailing bits)."""
    while len(data) % 3 != remainder:
        data += b" "
    return data


def trailing_bits(segment: str) -> str:
    """Set a trailing (unused) bit in the last character: same bytes, non-canonical text."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 in (2, 3), "segment has no trailing bits"
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) | 1]


def noncanonical_header(now: int) -> str:
    h = trailing_bits(b64url(slack(dumps(header_of(ES)), 1)))
    return sign_segments(ES, h, b64url(dumps(good(now))))


def noncanonical_payload(now: int) -> str:
    p = trailing_bits(b64url(slack(dumps(good(now)), 1)))
    return sign_segments(ES, b64url(dumps(header_of(ES))), p)


def noncanonical_signature(now: int) -> str:
    h, p, s = tok(now).split(".")
    return f"{h}.{p}.{trailing_bits(s)}"


def padded(now: int, part: str) -> str:
    h = b64url(slack(dumps(header_of(ES)), 1))
    p = b64url(slack(dumps(good(now)), 1))
    if part == "header":
        return sign_segments(ES, h + "==", p)
    if part == "payload":
        return sign_segments(ES, h, p + "==")
    return sign_segments(ES, h, p) + "=="


def standard_alphabet(now: int) -> str:
    """A payload whose base64url has '-' or '_', sent in the standard alphabet ('+', '/')."""
    for size in range(64):
        p = b64url(dumps(good(now, note="?>" * size + "~")))
        if "-" in p or "_" in p:
            return sign_segments(ES, b64url(dumps(header_of(ES))), p.replace("-", "+").replace("_", "/"))
    raise AssertionError("no filler produced '-' or '_'")


def whitespace(now: int, where: str) -> str:
    token = tok(now)
    h, p, s = token.split(".")
    middle = len(p) // 2
    if where == "inner-space":
        return sign_segments(ES, h, p[:middle] + " " + p[middle:])
    if where == "inner-tab":
        return sign_segments(ES, h, p[:middle] + "\t" + p[middle:])
    if where == "inner-newline":
        return sign_segments(ES, h, p[:middle] + "\n" + p[middle:])
    if where == "leading":
        return " " + token
    return token + " "


def nested(now: int) -> str:
    inner = tok(now).encode()
    return sign(ES, inner, cty="JWT")


def jwe_dir(now: int) -> str:
    key = OctKey.generate_key(256)
    return jwe.encrypt_compact({"alg": "dir", "enc": "A256GCM", "typ": "at+jwt"}, dumps(good(now)), key)


def jwe_rsa(now: int) -> str:
    return jwe.encrypt_compact({"alg": "RSA-OAEP-256", "enc": "A256GCM", "typ": "at+jwt", "kid": "rsa"},
                               dumps(good(now)), RS.key, algorithms=["RSA-OAEP-256", "A256GCM"])


def self_signed_x5c() -> list[str]:
    private = ATTACKER.key.raw_value
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
            .sign(private, hashes.SHA256()))
    return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]


def act_chain(depth: int) -> dict[str, Any]:
    act: dict[str, Any] = {"sub": f"agent-{depth}"}
    for level in range(depth - 1, 0, -1):
        act = {"sub": f"agent-{level}", "act": act}
    return act


def deep_json(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    build: Callable[[int], str]
    why: str = ""  # regex the InvalidToken description must match (rejected rows)
    accept: bool = False
    #: the end-to-end answer: "invalid_token" (401), "invalid_request" (400: not an RFC 6750
    #: b64token, refused by stage 4 before verification), "ok" (200, reaches the upstream),
    #: or None when the row cannot be sent over HTTP or depends on an exact clock boundary
    http: str | None = "invalid_token"


def rej(row_id: str, build: Callable[[int], str], why: str, http: str | None = "invalid_token") -> Row:
    return Row(row_id, build, why, False, http)


def ok(row_id: str, build: Callable[[int], str], http: str | None = "ok") -> Row:
    return Row(row_id, build, "", True, http)


NOT_COMPACT = "not a compact JWS"
ALG_NOT_ALLOWED = "alg is not allowed"
BOUND_ALG = "does not match the algorithm bound"
BAD_SIG = "signature is invalid"
UNKNOWN_KID = "kid is not among"
TYP = "typ must be at"
ISS = "issuer .iss. is not accepted"
AUD_TYPE = "aud'? (claim )?must"
AUD_MISSING = "audience does not include"
DUPLICATE = "duplicate member"
MISSING = "lacks required claims"
INVALID_CLAIM = "claims are invalid"
EXPIRED = "has expired"
NOT_JSON = "not valid JSON"
NOT_CANONICAL = "not canonical base64url"
STRING_CLAIM = "claim must be a non-empty string"


def _alg_case(alg: str) -> Callable[[int], str]:
    return lambda now: raw_token({"alg": alg, "typ": "at+jwt"}, dumps(good(now)))


ROWS: list[Row] = [
    # positive controls: one per key type, so the fixture provably accepts good tokens
    ok("AT-01-control-es256-accepted", lambda now: tok(now)),
    ok("AT-13-control-rs256-accepted", lambda now: tok(now, RS)),
    ok("AT-13-control-ps256-accepted", lambda now: tok(now, PS)),
    ok("AT-13-control-eddsa-accepted", lambda now: tok(now, ED)),
    ok("JA-19-control-rsa-without-alg-bound-rs256-accepted", lambda now: tok(now, RS_NOALG)),
    # JA-01 alg none, every spelling (unsigned: empty signature; plus one with junk signature)
    *(rej(f"JA-01-alg-{alg}-empty-signature", _alg_case(alg), NOT_COMPACT) for alg in ("none", "None", "NONE", "nOnE")),
    rej("JA-01-alg-none-with-signature-bytes",
        lambda now: raw_token({"alg": "none", "typ": "at+jwt", "kid": "k1"}, dumps(good(now)), b"junk"),
        ALG_NOT_ALLOWED),
    rej("JA-01-alg-missing", lambda now: sign_bytes(ES, dumps({"typ": "at+jwt", "kid": "k1"}), dumps(good(now))),
        ALG_NOT_ALLOWED),
    # JA-02 RS -> HS confusion: HMAC keyed with the issuer's public key bytes
    rej("JA-02-rs-hs-confusion-pem", lambda now: hmac_token(now, rsa_public(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)), ALG_NOT_ALLOWED),
    rej("JA-02-rs-hs-confusion-pkcs1-pem", lambda now: hmac_token(now, rsa_public(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)), ALG_NOT_ALLOWED),
    rej("JA-02-rs-hs-confusion-der", lambda now: hmac_token(now, rsa_public(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)), ALG_NOT_ALLOWED),
    rej("JA-02-rs-hs-confusion-jwk-json", lambda now: hmac_token(now, dumps(RS.public_jwk())), ALG_NOT_ALLOWED),
    rej("JA-02-rs-hs-confusion-pem-no-kid", lambda now: hmac_token(now, rsa_public(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), kid=None), ALG_NOT_ALLOWED),
    rej("JA-02-es-hs-confusion-pem", lambda now: hmac_token(now, ES.key.raw_value.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), kid="k1"), ALG_NOT_ALLOWED),
    # JA-03 psychic signatures and out-of-range r / s
    rej("JA-03-es256-r-s-zero-raw", lambda now: es_signature(now, lambda r, s: bytes(64)), BAD_SIG),
    rej("JA-03-es256-r-s-zero-der", lambda now: es_signature(now, lambda r, s: base64.b64decode("MAYCAQACAQA=")),
        BAD_SIG),
    rej("JA-03-es256-r-s-equal-n", lambda now: es_signature(now, lambda r, s: i32(P256_N) * 2), BAD_SIG),
    rej("JA-03-es256-r-equal-n", lambda now: es_signature(now, lambda r, s: i32(P256_N) + i32(s)), BAD_SIG),
    rej("JA-03-es256-s-equal-n", lambda now: es_signature(now, lambda r, s: i32(r) + i32(P256_N)), BAD_SIG),
    rej("JA-03-es256-r-above-n", lambda now: es_signature(now, lambda r, s: b"\xff" * 32 + i32(s)), BAD_SIG),
    rej("JA-03-es256-s-zero", lambda now: es_signature(now, lambda r, s: i32(r) + bytes(32)), BAD_SIG),
    rej("JA-03-es256-r-zero", lambda now: es_signature(now, lambda r, s: bytes(32) + i32(s)), BAD_SIG),
    # JA-04 signature encoding: raw r||s of exactly 64 bytes only; high-S is not forbidden
    rej("JA-04-es256-der-signature", lambda now: es_signature(now, lambda r, s: encode_dss_signature(r, s)), BAD_SIG),
    rej("JA-04-es256-65-bytes", lambda now: es_signature(now, lambda r, s: b"\x00" + i32(r) + i32(s)), BAD_SIG),
    rej("JA-04-es256-63-bytes", lambda now: es_signature(now, lambda r, s: (i32(r) + i32(s))[:63]), BAD_SIG),
    rej("JA-04-es256-33-byte-r", lambda now: es_signature(now, lambda r, s: b"\x00" + i32(r) + i32(s)[1:]), BAD_SIG),
    ok("JA-04-es256-high-s-accepted", lambda now: es_signature(now, lambda r, s: i32(r) + i32(P256_N - s))),
    # JA-05 kid injection: pure map lookup, unknown kid refused
    rej("JA-05-kid-path-traversal", lambda now: tok(now, header={"kid": "../../../../dev/null"}), UNKNOWN_KID),
    rej("JA-05-kid-sql-injection", lambda now: tok(now, header={"kid": "' OR 1=1 --"}), UNKNOWN_KID),
    rej("JA-05-kid-nul", lambda now: tok(now, header={"kid": "k1\x00"}), UNKNOWN_KID),
    rej("JA-05-kid-ldap-wildcard", lambda now: tok(now, header={"kid": "*)(kid=*"}), UNKNOWN_KID),
    rej("JA-05-kid-very-long", lambda now: tok(now, header={"kid": "k" * 300}), "kid must be a string"),
    rej("JA-05-kid-number", lambda now: rawtok(now, header={"kid": 1}), "kid must be a string"),
    rej("JA-05-kid-array", lambda now: rawtok(now, header={"kid": ["k1"]}), "kid must be a string"),
    rej("JA-05-kid-absent-several-keys", lambda now: tok(now, header={"kid": None}), UNKNOWN_KID),
    # JA-06 jku / x5u: keys only from configuration, even when the signature is the issuer's
    rej("JA-06-jku-attacker-jwks", lambda now: tok(now, ATTACKER, header={"jku": "https://evil.test/jwks.json"}),
        "carries a jku header"),
    rej("JA-06-jku-with-issuer-key", lambda now: tok(now, header={"jku": "http://127.0.0.1:1/jwks"}),
        "carries a jku header"),
    rej("JA-06-x5u-attacker-cert", lambda now: tok(now, ATTACKER, header={"x5u": "https://evil.test/cert.pem"}),
        "carries a x5u header"),
    # JA-07 embedded keys
    rej("JA-07-embedded-jwk-attacker", lambda now: tok(
        now, ATTACKER, header={"kid": None, "jwk": ATTACKER.public_jwk()}), "carries a jwk header"),
    rej("JA-07-embedded-jwk-issuer-key", lambda now: tok(now, header={"jwk": ES.public_jwk()}),
        "carries a jwk header"),
    rej("JA-07-embedded-x5c-self-signed",
        lambda now: tok(now, ATTACKER, header={"kid": None, "x5c": self_signed_x5c()}), "carries a x5c header"),
    # JA-08 crit
    rej("JA-08-crit-unknown-extension", lambda now: rawtok(now, header={"crit": ["x-foo"], "x-foo": 1}), "crit header"),
    rej("JA-08-crit-empty-list", lambda now: tok(now, header={"crit": []}), "crit header"),
    rej("JA-08-crit-registered-name", lambda now: rawtok(now, header={"crit": ["exp"]}), "crit header"),
    rej("JA-08-crit-b64-unencoded", lambda now: tok(now, header={"crit": ["b64"], "b64": True}), "crit header"),
    # JA-09 ID-token substitution
    rej("JA-09-id-token-typ-jwt", lambda now: tok(
        now, header={"typ": "JWT"}, aud="agent-42", nonce="n-0S6", azp="agent-42"), TYP),
    rej("JA-09-id-token-no-typ", lambda now: tok(
        now, header={"typ": None}, aud="agent-42", nonce="n-0S6", azp="agent-42"), TYP),
    rej("JA-09-id-token-aud-client-id", lambda now: tok(now, aud="agent-42", nonce="n-0S6", azp="agent-42"),
        AUD_MISSING),
    # JA-10 other JWT kinds presented as access tokens
    *(rej(f"JA-10-typ-{typ.replace('+', '-')}", (lambda t: lambda now: tok(now, header={"typ": t}))(typ), TYP)
      for typ in ("dpop+jwt", "wit+jwt", "wpt+jwt", "logout+jwt", "secevent+jwt", "jwt-svid", "id_token+jwt")),
    # JA-11 nested and encrypted tokens
    rej("JA-11-nested-cty-jwt", nested, "payload is not valid JSON"),
    rej("JA-11-cty-jwt-over-claims", lambda now: tok(now, header={"cty": "JWT"}), "nested or encrypted"),
    rej("JA-11-cty-json", lambda now: tok(now, header={"cty": "json"}), "nested or encrypted"),
    rej("JA-11-enc-in-jws-header", lambda now: rawtok(now, header={"enc": "A256GCM"}), "nested or encrypted"),
    rej("JA-11-zip-in-jws-header", lambda now: rawtok(now, header={"zip": "DEF"}), "nested or encrypted"),
    rej("JA-11-jwe-5-segments-dir", jwe_dir, NOT_COMPACT),
    rej("JA-11-jwe-5-segments-rsa-oaep", jwe_rsa, NOT_COMPACT),
    # JA-12 weak keys are never loaded
    rej("JA-12-rsa-1024-key-skipped", lambda now: tok(now, WEAK), UNKNOWN_KID),
    rej("JA-12-oct-hs256-key-skipped", lambda now: hmac_token(now, OCT_SECRET, kid="oct"), ALG_NOT_ALLOWED),
    # JA-13 size and depth caps
    rej("JA-13-oversize-token", lambda now: tok(now, filler="x" * 9000), "larger than 8192"),
    rej("JA-13-oversize-header", lambda now: rawtok(now, header={"x-filler": "x" * 5000}), "header is not valid JSON"),
    rej("JA-13-aud-33-entries", lambda now: tok(now, aud=[RESOURCE] + [f"https://rs{i}.test" for i in range(32)]),
        AUD_TYPE),
    rej("JA-13-act-depth-11", lambda now: tok(now, act=act_chain(11)), "act chain is deeper"),
    ok("JA-13-act-depth-10-accepted", lambda now: tok(now, act=act_chain(10))),
    rej("JA-13-json-nesting-40", lambda now: tok(now, deep=deep_json(40)), "nested deeper"),
    # JA-14 duplicate members, header and payload
    rej("JA-14-duplicate-header-alg", lambda now: sign_bytes(
        ES, with_duplicate(header_of(ES, alg="none"), "alg", "ES256"), dumps(good(now))), DUPLICATE),
    rej("JA-14-duplicate-header-typ", lambda now: sign_bytes(
        ES, with_duplicate(header_of(ES, typ="JWT"), "typ", "at+jwt"), dumps(good(now))), DUPLICATE),
    rej("JA-14-duplicate-header-kid", lambda now: sign_bytes(
        ES, with_duplicate(header_of(ES), "kid", "k1"), dumps(good(now))), DUPLICATE),
    rej("JA-14-duplicate-payload-sub", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_duplicate(good(now), "sub", "admin")), DUPLICATE),
    rej("JA-14-duplicate-payload-iss", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_duplicate(good(now), "iss", ISSUER)), DUPLICATE),
    rej("JA-14-duplicate-payload-aud", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_duplicate(good(now, aud="https://other.test"), "aud", RESOURCE)), DUPLICATE),
    rej("JA-14-duplicate-payload-exp", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_duplicate(good(now, exp=now - 3600), "exp", now + 600)), DUPLICATE),
    # JA-15 / JB-10 non-canonical base64url and non-compact serializations
    rej("JA-15-header-padding", lambda now: padded(now, "header"), NOT_COMPACT, http="invalid_request"),
    rej("JA-15-payload-padding", lambda now: padded(now, "payload"), NOT_COMPACT, http="invalid_request"),
    rej("JA-15-signature-padding", lambda now: padded(now, "signature"), NOT_COMPACT),
    rej("JA-15-standard-alphabet-plus-slash", standard_alphabet, NOT_COMPACT),
    rej("JA-15-header-nonzero-trailing-bits", noncanonical_header, NOT_CANONICAL),
    rej("JA-15-payload-nonzero-trailing-bits", noncanonical_payload, NOT_CANONICAL),
    rej("JA-15-signature-nonzero-trailing-bits", noncanonical_signature, BAD_SIG),
    rej("JA-15-whitespace-inner-space", lambda now: whitespace(now, "inner-space"), NOT_COMPACT,
        http="invalid_request"),
    rej("JA-15-whitespace-inner-tab", lambda now: whitespace(now, "inner-tab"), NOT_COMPACT, http="invalid_request"),
    # HTTP cannot carry these (a field value has no newline; surrounding whitespace is not part of it)
    rej("JA-15-whitespace-inner-newline", lambda now: whitespace(now, "inner-newline"), NOT_COMPACT, http=None),
    rej("JA-15-whitespace-leading", lambda now: whitespace(now, "leading"), NOT_COMPACT, http=None),
    rej("JA-15-whitespace-trailing", lambda now: whitespace(now, "trailing"), NOT_COMPACT, http=None),
    rej("JA-15-four-segments", lambda now: tok(now) + ".AAAA", NOT_COMPACT),
    rej("JA-15-two-segments", lambda now: tok(now).rsplit(".", 1)[0], NOT_COMPACT),
    rej("JA-15-segment-length-mod-4-is-1", lambda now: sign_segments(
        ES, b64url(dumps(header_of(ES))), _length_1_mod_4(b64url(dumps(good(now))))), "not valid base64url"),
    rej("JB-10-json-serialization", lambda now: json.dumps(
        dict(zip(("protected", "payload", "signature"), tok(now).split("."), strict=True))), NOT_COMPACT,
        http="invalid_request"),
    rej("JB-05-invalid-utf8-payload", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), dumps(good(now))[:-1] + b', "sub2": "\xff\xfe"}'), NOT_JSON),
    rej("JB-05-payload-not-an-object", lambda now: sign_bytes(ES, dumps(header_of(ES)), b'["iss"]'),
        "payload is not a JSON object"),
    # JA-16 NumericDate type confusion
    rej("JA-16-exp-string", lambda now: tok(now, exp=str(now + 600)), INVALID_CLAIM),
    rej("JA-16-exp-bool-true", lambda now: tok(now, exp=True), INVALID_CLAIM),
    rej("JA-16-exp-bool-false", lambda now: tok(now, exp=False), INVALID_CLAIM),
    rej("JA-16-exp-float-huge-1e400", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_raw(good(now), exp="1e400")), INVALID_CLAIM),
    rej("JA-16-exp-negative", lambda now: tok(now, exp=-1), EXPIRED),
    rej("JA-16-exp-negative-huge", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_raw(good(now), exp="-1e400")), INVALID_CLAIM),
    rej("JA-16-exp-nan-literal", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_raw(good(now), exp="NaN")), NOT_JSON),
    rej("JA-16-exp-infinity-literal", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_raw(good(now), exp="Infinity")), NOT_JSON),
    rej("JA-16-exp-leading-zero", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_raw(good(now), exp="0" + str(now + 600))), NOT_JSON),
    rej("JA-16-exp-array", lambda now: tok(now, exp=[now + 600]), INVALID_CLAIM),
    rej("JA-16-exp-object", lambda now: tok(now, exp={"$date": now + 600}), INVALID_CLAIM),
    rej("JA-16-iat-string", lambda now: tok(now, iat=str(now)), INVALID_CLAIM),
    rej("JA-16-iat-bool", lambda now: tok(now, iat=True), INVALID_CLAIM),
    rej("JA-16-iat-infinity-overflow", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_raw(good(now), iat="-1e400")), INVALID_CLAIM),
    rej("JA-16-nbf-string", lambda now: tok(now, nbf=str(now)), INVALID_CLAIM),
    rej("JA-16-nbf-bool", lambda now: tok(now, nbf=False), INVALID_CLAIM),
    rej("JA-16-nbf-nan-literal", lambda now: sign_bytes(
        ES, dumps(header_of(ES)), with_raw(good(now), nbf="NaN")), NOT_JSON),
    rej("JA-16-exp-huge-finite-never-expires", lambda now: tok(now, exp=1e300), "not a plausible NumericDate"),
    rej("JA-16-exp-after-year-9999", lambda now: tok(now, exp=253402300800), "not a plausible NumericDate"),
    rej("JA-16-iat-negative", lambda now: tok(now, iat=-5), "not a plausible NumericDate"),
    rej("JA-16-nbf-negative", lambda now: tok(now, nbf=-5), "not a plausible NumericDate"),
    ok("JA-16-exp-fractional-accepted", lambda now: tok(now, exp=now + 600.5)),
    # JA-17 aud type confusion
    rej("JA-17-aud-object", lambda now: tok(now, aud={"aud": RESOURCE}), AUD_TYPE),
    rej("JA-17-aud-number", lambda now: tok(now, aud=1), AUD_TYPE),
    rej("JA-17-aud-bool", lambda now: tok(now, aud=True), AUD_TYPE),
    rej("JA-17-aud-array-of-numbers", lambda now: tok(now, aud=[1, 2]), AUD_TYPE),
    rej("JA-17-aud-array-with-null", lambda now: tok(now, aud=[RESOURCE, None]), AUD_TYPE),
    rej("JA-17-aud-array-with-number", lambda now: tok(now, aud=[RESOURCE, 1]), AUD_TYPE),
    rej("JA-17-aud-nested-array", lambda now: tok(now, aud=[[RESOURCE]]), AUD_TYPE),
    rej("JA-17-aud-empty-array", lambda now: tok(now, aud=[]), AUD_TYPE),
    rej("JA-17-aud-empty-string", lambda now: tok(now, aud=""), AUD_MISSING),
    rej("JA-17-aud-unparseable-uri-beside-resource", lambda now: tok(now, aud=[RESOURCE, "http://[::1"]),
        "aud claim"),
    # JA-18 iss lookalikes: exact byte comparison
    *(rej(f"JA-18-iss-{name}", (lambda v: lambda now: tok(now, iss=v))(value), ISS) for name, value in (
        ("trailing-slash", ISSUER + "/"),
        ("uppercase-host", "https://ISSUER.test"),
        ("uppercase-scheme", "HTTPS://issuer.test"),
        ("suffix-domain", ISSUER + ".evil"),
        ("suffix-no-dot", ISSUER + "evil"),
        ("prefix-path", "https://evil.test/" + ISSUER),
        ("http-scheme", "http://issuer.test"),
        ("explicit-port", "https://issuer.test:443"),
        ("leading-space", " " + ISSUER),
        ("trailing-nul", ISSUER + "\x00"),
        ("cyrillic-i-homoglyph", "https://\u0456ssuer.test"),
        ("userinfo", "https://issuer.test@evil.test"),
    )),
    rej("JA-18-iss-array", lambda now: tok(now, iss=[ISSUER]), "no iss claim"),
    # JA-19 alg downgrade / one key, one algorithm
    rej("JA-19-rs256-key-token-says-ps256", lambda now: sign(SigningKey(RS.key, "PS256", "rsa"), good(now)),
        BOUND_ALG),
    rej("JA-19-unbound-rsa-key-token-says-ps256", lambda now: sign(SigningKey(RS_NOALG.key, "PS256", "rsa-noalg"),
                                                                  good(now)), BOUND_ALG),
    rej("JA-19-ps256-key-token-says-rs256", lambda now: sign(SigningKey(PS.key, "RS256", "ps"), good(now)), BOUND_ALG),
    rej("JA-19-es-kid-rsa-signature", lambda now: sign(SigningKey(RS.key, "RS256", "k1"), good(now)), BOUND_ALG),
    rej("JA-19-token-says-hs256", lambda now: hmac_token(now, b"x" * 32, kid="rsa"), ALG_NOT_ALLOWED),
    rej("JA-19-token-says-rs512", lambda now: sign(SigningKey(RS.key, "RS512", "rsa"), good(now)), ALG_NOT_ALLOWED),
    rej("JA-19-token-says-es384", lambda now: raw_token(header_of(ES, alg="ES384"), dumps(good(now)), bytes(96)),
        ALG_NOT_ALLOWED),
    rej("JA-19-token-says-ed25519-name", lambda now: sign(SigningKey(ED.key, "Ed25519", "ed"), good(now)),
        ALG_NOT_ALLOWED),
    # JA-20 / AT-01 / AT-09 typ
    ok("JA-20-typ-AT+JWT-accepted", lambda now: tok(now, header={"typ": "AT+JWT"})),
    ok("JA-20-typ-application-AT+JWT-accepted", lambda now: tok(now, header={"typ": "application/AT+JWT"})),
    ok("JA-20-typ-application-at+jwt-accepted", lambda now: tok(now, header={"typ": "application/at+jwt"})),
    ok("JA-20-typ-mixed-case-accepted", lambda now: tok(now, header={"typ": "Application/At+Jwt"})),
    *(rej(f"JA-20-typ-{name}", (lambda t: lambda now: tok(now, header={"typ": t}))(value), TYP) for name, value in (
        ("charset-parameter", "at+jwt; charset=utf-8"),
        ("jwt-lower", "jwt"),
        ("JWT", "JWT"),
        ("application-jwt", "application/jwt"),
        ("leading-space", " at+jwt"),
        ("trailing-space", "at+jwt "),
        ("trailing-nul", "at+jwt\x00"),
        ("fullwidth", "\uff21\uff34+\uff2a\uff37\uff34"),
        ("double-prefix", "application/application/at+jwt"),
        ("suffix-only", "+jwt"),
        ("at-jwt-hyphen", "at-jwt"),
    )),
    rej("AT-09-typ-missing", lambda now: tok(now, header={"typ": None}), TYP),
    rej("AT-09-typ-array", lambda now: rawtok(now, header={"typ": ["at+jwt"]}), TYP),
    rej("AT-09-typ-number", lambda now: rawtok(now, header={"typ": 1}), TYP),
    # AT-03 required claims, each missing, and wrong JSON types
    *(rej(f"AT-03-missing-{name}", (lambda n: lambda now: tok(now, **{n: None}))(name), why)
      for name, why in (("iss", "no iss claim"), ("exp", MISSING), ("aud", AUD_TYPE), ("sub", MISSING),
                        ("client_id", STRING_CLAIM), ("iat", MISSING), ("jti", MISSING))),
    rej("AT-03-sub-number", lambda now: tok(now, sub=42), INVALID_CLAIM),
    rej("AT-03-sub-empty", lambda now: tok(now, sub=""), INVALID_CLAIM),
    rej("AT-03-sub-control-character", lambda now: tok(now, sub="alice\nbob"), "control characters"),
    rej("AT-03-client-id-bool", lambda now: tok(now, client_id=True), STRING_CLAIM),
    rej("AT-03-client-id-number", lambda now: tok(now, client_id=42), STRING_CLAIM),
    rej("AT-03-client-id-empty", lambda now: tok(now, client_id=""), STRING_CLAIM),
    rej("AT-03-client-id-array", lambda now: tok(now, client_id=["agent-42"]), STRING_CLAIM),
    rej("AT-03-jti-number", lambda now: tok(now, jti=7), INVALID_CLAIM),
    rej("AT-03-iss-number", lambda now: tok(now, iss=1), "no iss claim"),
    rej("AT-03-sub-null", lambda now: sign_bytes(ES, dumps(header_of(ES)), with_raw(good(now), sub="null")),
        MISSING),
    rej("AT-06-scope-array", lambda now: tok(now, scope=["tools:read"]), "scope claim"),
    rej("AT-03-act-without-sub", lambda now: tok(now, act={"client_id": "x"}), "act claim"),
    # AT-11 exact issuer
    rej("AT-11-iss-unknown-issuer", lambda now: tok(now, iss="https://other-as.test"), ISS),
    rej("AT-11-iss-attacker-signed-real-iss", lambda now: tok(now, ATTACKER), UNKNOWN_KID),
    rej("AT-13-issuer-kid-attacker-signature", lambda now: sign(SigningKey(ATTACKER.key, "ES256", "k1"), good(now)),
        BAD_SIG),
    rej("AT-13-payload-swapped-after-signing", lambda now: ".".join(
        (lambda a, b: (a[0], b[1], a[2]))(tok(now).split("."), tok(now, sub="admin").split("."))), BAD_SIG),
    # AT-12 / RI-02 / RI-04 audience
    rej("AT-12-aud-string-other-resource", lambda now: tok(now, aud="https://other.test/mcp"), AUD_MISSING),
    rej("AT-12-aud-array-missing-resource", lambda now: tok(now, aud=["https://a.test/mcp", "https://b.test"]),
        AUD_MISSING),
    rej("AT-12-aud-trailing-slash", lambda now: tok(now, aud=RESOURCE + "/"), AUD_MISSING),
    rej("AT-12-aud-path-case", lambda now: tok(now, aud=RESOURCE.replace("/mcp", "/MCP")), AUD_MISSING),
    rej("AT-12-aud-origin-only", lambda now: tok(now, aud="http://127.0.0.1:8080"), AUD_MISSING),
    rej("AT-12-aud-without-port", lambda now: tok(now, aud="http://127.0.0.1/mcp"), AUD_MISSING),
    rej("AT-12-aud-with-query", lambda now: tok(now, aud=RESOURCE + "?x=1"), AUD_MISSING),
    rej("AT-12-aud-path-prefix", lambda now: tok(now, aud="http://127.0.0.1:8080/mc"), AUD_MISSING),
    rej("AT-12-aud-issuer", lambda now: tok(now, aud=ISSUER), AUD_MISSING),
    ok("AT-12-aud-array-containing-resource-accepted", lambda now: tok(now, aud=["https://a.test", RESOURCE])),
    ok("AT-12-aud-string-accepted", lambda now: tok(now, aud=RESOURCE)),
    ok("AT-12-MCP-10-aud-uppercase-scheme-and-host-accepted", lambda now: tok(now, aud="HTTP://127.0.0.1:8080/mcp")),
    # AT-14 time checks (skew 30 s); rows on an exact boundary only run against the frozen clock
    rej("AT-14-expired-an-hour-ago", lambda now: tok(now, iat=now - 7200, exp=now - 3600), EXPIRED),
    rej("AT-14-expired-beyond-skew", lambda now: tok(now, iat=now - 700, exp=now - SKEW - 1), EXPIRED),
    rej("AT-14-expired-at-skew-boundary", lambda now: tok(now, iat=now - 700, exp=now - SKEW), EXPIRED),
    ok("AT-14-expired-within-skew-accepted", lambda now: tok(now, iat=now - 700, exp=now - SKEW + 1), http=None),
    rej("AT-14-nbf-in-future", lambda now: tok(now, nbf=now + 3600), "not yet valid"),
    rej("AT-14-nbf-beyond-skew", lambda now: tok(now, nbf=now + SKEW + 1), "not yet valid", http=None),
    ok("AT-14-nbf-at-skew-boundary-accepted", lambda now: tok(now, nbf=now + SKEW), http=None),
    ok("AT-14-nbf-within-skew-accepted", lambda now: tok(now, nbf=now + 10)),
    rej("AT-14-iat-in-future", lambda now: tok(now, iat=now + 3600, exp=now + 4200), "issued in the future"),
    rej("AT-14-iat-beyond-skew", lambda now: tok(now, iat=now + SKEW + 1), "issued in the future", http=None),
    ok("AT-14-iat-within-skew-accepted", lambda now: tok(now, iat=now + 10)),
]


def test_attack_table_ids_are_unique_and_cover_JA_01_to_JA_20_and_AT_checks():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    for number in range(1, 21):
        assert any(i.startswith(f"JA-{number:02d}-") for i in ids), f"JA-{number:02d} has no row"
    for check in ("AT-03", "AT-09", "AT-11", "AT-12", "AT-14"):
        assert any(i.startswith(check + "-") for i in ids), f"{check} has no row"
    for claim in ("iss", "exp", "aud", "sub", "client_id", "iat", "jti"):
        assert f"AT-03-missing-{claim}" in ids
    assert all(re.fullmatch(r"(AT|JA|JB)-\d\d-[A-Za-z0-9+_\-]+", i) for i in ids), ids


# -- direct verification -------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwks_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("attack-jwks") / "jwks.json"
    path.write_text(json.dumps(jwks_document()))
    return path


def make_verifier(path: Path, clock: FrozenClock, **issuer_fields: Any) -> TokenVerifier:
    fields: dict[str, Any] = {"algorithms": ALGORITHMS, "jwks_refetch_interval_seconds": 1, **issuer_fields}
    issuer = Issuer(id="test", issuer=ISSUER, jwks_file=str(path), **fields)
    keys = KeyCache(issuer, FileKeySource(str(path)), clock)
    assert asyncio.run(keys.refresh("test")), keys.last_error
    return TokenVerifier({"test": keys}, clock)


def verify(verifier: TokenVerifier, token: str, resource: str = RESOURCE) -> Principal:
    return asyncio.run(verifier.verify(token, ("test",), resource))


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
def test_JA_AT_attack_table_against_token_verifier(row: Row, jwks_path: Path):
    clock = FrozenClock(NOW)
    verifier = make_verifier(jwks_path, clock)
    token = row.build(NOW)
    if row.accept:
        principal = verify(verifier, token)
        assert (principal.iss, principal.sub, principal.client_id) == (ISSUER, "alice", "agent-42")
        assert principal.issuer_id == "test"
        return
    with pytest.raises(InvalidToken) as caught:
        verify(verifier, token)
    description = caught.value.description
    assert re.search(row.why, description), f"refused for another reason: {description!r}"
    assert caught.value.status == 401 and caught.value.error == "invalid_token"
    for segment in token.split("."):
        if len(segment) >= 12:
            assert segment not in description


# -- verifier behaviour around the table ------------------------------------------------------


def test_AT_14_cached_token_is_rechecked_for_expiry(jwks_path: Path):
    clock = FrozenClock(NOW)
    verifier = make_verifier(jwks_path, clock)
    token = tok(NOW)
    assert verify(verifier, token).sub == "alice"
    clock.advance(600 + SKEW - 1)
    assert verify(verifier, token).sub == "alice"  # served from the cache, still within skew
    clock.advance(1)
    with pytest.raises(InvalidToken, match="expired"):
        verify(verifier, token)


def test_AT_14_cached_token_with_nbf_is_rechecked(jwks_path: Path):
    clock = FrozenClock(NOW)
    verifier = make_verifier(jwks_path, clock)
    token = tok(NOW, nbf=NOW + SKEW)
    assert verify(verifier, token).sub == "alice"
    clock.now -= 1  # wall clock stepped back: the cached token is not valid yet again
    with pytest.raises(InvalidToken, match="nbf"):
        verify(verifier, token)


def test_AT_12_RI_04_cached_token_is_rechecked_for_audience(jwks_path: Path):
    verifier = make_verifier(jwks_path, FrozenClock(NOW))
    token = tok(NOW)
    assert verify(verifier, token).sub == "alice"
    with pytest.raises(InvalidToken, match="audience"):
        verify(verifier, token, resource="http://127.0.0.1:8080/other")


def test_AT_11_token_of_an_issuer_the_resource_does_not_accept(jwks_path: Path):
    verifier = make_verifier(jwks_path, FrozenClock(NOW))
    token = tok(NOW)
    assert verify(verifier, token).sub == "alice"
    verifier.keys["other"] = verifier.keys["test"]
    with pytest.raises(InvalidToken, match="not accepted"):
        asyncio.run(verifier.verify(token, ("other",), RESOURCE))  # cached, but not for this resource


def test_JA_02_hs256_refused_even_when_misconfigured_into_the_allowlist(jwks_path: Path):
    """Defence in depth: the loader refuses HS* in a policy, but even an ``Issuer`` built by
    hand with HS256 allowed cannot turn the RSA public key into an HMAC secret, because the
    key was bound to RS256 when it was loaded (JB-01: one key, one algorithm)."""
    clock = FrozenClock(NOW)
    verifier = make_verifier(jwks_path, clock, algorithms=("RS256", "HS256"))
    pem = rsa_public(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InvalidToken, match=BOUND_ALG):
        verify(verifier, hmac_token(NOW, pem, kid="rsa"))
    with pytest.raises(InvalidToken, match=UNKNOWN_KID):
        verify(verifier, hmac_token(NOW, OCT_SECRET, kid="oct"))
    assert verify(verifier, tok(NOW, RS)).sub == "alice"


def test_JA_13_token_size_cap_follows_issuer_max_token_bytes(jwks_path: Path):
    verifier = make_verifier(jwks_path, FrozenClock(NOW), max_token_bytes=1024)
    with pytest.raises(InvalidToken, match="larger than 1024"):
        verify(verifier, tok(NOW, filler="x" * 1024))
    assert verify(verifier, tok(NOW)).sub == "alice"


def test_JB_10_non_ascii_token_is_an_invalid_token(jwks_path: Path):
    verifier = make_verifier(jwks_path, FrozenClock(NOW))
    with pytest.raises(InvalidToken):
        verify(verifier, "\u00e9yJ.eyJ.sig")


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The conftest stack, once for the whole table (one enforcer, JWKS endpoint and
    upstream instead of three servers per row), trusting every key of the table."""
    for running in start_stack(tmp_path_factory.mktemp("attack-stack"), key=ES):
        running.jwks.document = jwks_document()
        warm_up(running)
        yield running


def warm_up(stack: Stack) -> None:
    """Wait until the enforcer has refetched the JWKS (an unknown kid allows one refetch per
    second in ``basic_policy``): an RS256 token, whose key only the new document holds, passes."""
    deadline = time.monotonic() + 10
    while True:
        token = tok(int(time.time()), RS)
        response = stack.client.get("/mcp/tools", headers={"authorization": f"Bearer {token}"})
        if response.status_code == 200:
            break
        assert time.monotonic() < deadline, f"enforcer never picked up the JWKS: {response.text}"
        time.sleep(0.2)
    stack.upstream.requests.clear()


E2E_ROWS = [pytest.param(r, id=r.id) for r in ROWS if r.http is not None]


@pytest.mark.parametrize("row", E2E_ROWS)
def test_JA_AT_attack_table_end_to_end(row: Row, stack: Stack):
    token = row.build(int(time.time()))
    stack.upstream.requests.clear()
    response = stack.client.get("/mcp/tools", headers={"authorization": f"Bearer {token}"})
    if row.http == "ok":
        assert response.status_code == 200, response.text
        assert len(stack.upstream.requests) == 1
        assert stack.upstream.requests[0].header("authorization") is None
        return
    status = 401 if row.http == "invalid_token" else 400
    assert response.status_code == status, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer error="{row.http}"'), challenge
    assert "resource_metadata=" in challenge
    body = response.json()
    assert body["error"] == row.http
    if row.http == "invalid_token":
        assert re.search(row.why, body["error_description"]), f"refused for another reason: {body}"
    for segment in token.split("."):
        if len(segment) >= 12:
            assert segment not in response.text and segment not in challenge
    assert stack.upstream.requests == []
