"""SPIFFE IDs and JWT-SVIDs, validated offline against SPIFFE JWT bundles (STANDARDS.md section 14).

A JWT-SVID is a workload's identity document, not an access token: it has its own profile
(RFC 8725 "mutually exclusive validation rules", JB-09), checked here in this order:

1. size cap; JWS compact serialization only, three canonical base64url segments (SV-01);
2. header and payload as strict JSON (no duplicate members); header members only ``alg``,
   ``kid`` and ``typ`` (SV-02: ``jku``, ``jwk``, ``x5c``, ``crit`` ... are refused); ``alg``
   one of RS/ES/PS 256/384/512 (SV-03: ``none``, HS*, EdDSA refused); ``typ``, when present,
   exactly ``JWT`` or ``JOSE`` (SV-04);
3. ``sub`` a valid SPIFFE ID (SV-05); its trust domain selects the bundle, never ``iss`` (SV-08);
4. the key: from that bundle only, a JWK with ``use: jwt-svid`` and a ``kid`` (others are never
   loaded, SV-08), of a type that fits ``alg`` (and equal to the JWK's ``alg`` when it has one);
   with a ``kid`` in the header that key, without one each fitting key of the bundle;
5. the signature (joserfc, that key and that algorithm only);
6. ``aud`` present and naming one of the configured audiences (SV-06); ``exp`` present and not
   passed (SV-07), ``nbf`` when present, both with the configured leeway.

Why not py-spiffe (``spiffe`` on PyPI): it pulls grpcio and protobuf into every worker (its
package import alone loads the Workload API client, ~350 ms), and its validator does not refuse
extra headers (SV-02) nor filter bundle keys by ``use: jwt-svid`` (SV-08), which would have to
be redone here anyway. The tests use it as an independent cross-check of accepted SVIDs.

Verified SVIDs are cached by their SHA-256 until their bundle changes; ``exp``/``nbf`` are
checked again on every hit. Errors never quote the SVID, a key or a claim value.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import Key

from enforcer.auth import strictjson
from enforcer.auth.jwks import import_jwk, parse_key_set
from enforcer.auth.keysources import MAX_JWKS_BYTES, KeySourceError
from enforcer.clock import Clock

log = logging.getLogger("enforcer.workload")

#: SPIFFE-ID.md section 2: lower-case trust domain; path segments of letters, digits, ``.-_``;
#: no port, userinfo, query, fragment or percent-encoding; no trailing ``/``
SPIFFE_ID = re.compile(r"spiffe://([a-z0-9._-]+)((?:/[A-Za-z0-9._-]+)*)\Z")
TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+\Z")
MAX_SPIFFE_ID_BYTES = 2048
#: JWT-SVID.md section 2.1
SVID_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"})
_RSA_ALGORITHMS = frozenset(a for a in SVID_ALGORITHMS if a[:2] in ("RS", "PS"))
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
_TYPES = frozenset({"JWT", "JOSE"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")
MAX_SVID_BYTES = 8192
MAX_KEY_TRIES = 8  # an SVID without kid is tried against at most this many keys of its bundle
BUNDLE_RECHECK_SECONDS = 10.0
CACHE_ENTRIES = 4096


class SvidError(ValueError):
    """Why a workload credential was refused; the text is safe to send to the caller."""


def trust_domain(spiffe_id: str) -> str:
    """The trust domain of a valid SPIFFE ID, or ``SvidError``."""
    match = SPIFFE_ID.match(spiffe_id)
    if match is None or len(spiffe_id) > MAX_SPIFFE_ID_BYTES:
        raise SvidError("not a valid SPIFFE ID (spiffe://trust-domain/path, SPIFFE-ID.md section 2)")
    if any(segment in (".", "..") for segment in match.group(2).split("/")):
        raise SvidError("not a valid SPIFFE ID: '.' and '..' path segments are not allowed")
    return match.group(1)


@dataclass(frozen=True)
class BundleKey:
    kid: str
    algorithms: frozenset[str]  # the JWK's ``alg`` alone, else every SVID algorithm its type fits
    key: Key


def bundle_key(jwk: Any) -> BundleKey:
    """A JWT-SVID verification key from one JWK of a SPIFFE bundle, or ``ValueError``."""
    if not isinstance(jwk, dict):
        raise ValueError("not an object")
    if jwk.get("use") != "jwt-svid":
        raise ValueError("use is not 'jwt-svid' (x509-svid and other keys never verify JWT-SVIDs)")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise ValueError("a jwt-svid key needs a kid of at most 256 characters")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise ValueError("contains private or symmetric key material")
    kty = jwk.get("kty")
    if kty == "RSA":
        possible = _RSA_ALGORITHMS
    elif kty == "EC" and jwk.get("crv") in _EC_ALGORITHMS:
        possible = frozenset({_EC_ALGORITHMS[jwk["crv"]]})
    else:
        raise ValueError("JWT-SVID keys are RSA or EC P-256/P-384/P-521")
    declared = jwk.get("alg")
    if declared is not None:
        if declared not in possible:
            raise ValueError("its alg does not fit the key or is not a JWT-SVID algorithm")
        possible = frozenset({declared})
    # joserfc knows only the RFC 7517 ``use`` values (sig, enc): it checks the key without it
    return BundleKey(kid, possible, import_jwk({name: value for name, value in jwk.items() if name != "use"}))


class BundleFile:
    """The JWT-SVID keys of one trust domain, from a bundle file re-read when it changes (looked
    at, on use, at most every ``BUNDLE_RECHECK_SECONDS``). A file that cannot be read or parsed
    keeps the last good keys (none at first: SVIDs of the domain are refused)."""

    def __init__(self, domain: str, path: str, clock: Clock) -> None:
        self.domain, self.path, self.clock = domain, path, clock
        self.keys: dict[str, BundleKey] = {}
        self.generation = 0
        self._stamp: tuple[int, int, int] | None = None
        self._checked = clock.monotonic()
        self._load()

    def current(self) -> dict[str, BundleKey]:
        now = self.clock.monotonic()
        if now - self._checked >= BUNDLE_RECHECK_SECONDS:
            self._checked = now
            self._load()
        return self.keys

    def _load(self) -> None:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if stamp == self._stamp:
                return
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_JWKS_BYTES + 1)
            keys, skipped = parse_key_set(data, bundle_key, require_kid=True)
        except (OSError, KeySourceError) as exc:
            log.error("SPIFFE bundle unreadable; the last good keys stay in use",
                      extra={"trust_domain": self.domain, "path": self.path, "error": str(exc)})
            return
        self._stamp, self.keys, self.generation = stamp, keys, self.generation + 1
        for note in skipped:
            log.info("SPIFFE bundle key skipped", extra={"trust_domain": self.domain, "note": note})
        if not keys:
            log.warning("SPIFFE bundle has no jwt-svid keys; JWT-SVIDs of this trust domain are refused",
                        extra={"trust_domain": self.domain, "path": self.path})


@dataclass(frozen=True)
class _Verified:
    spiffe_id: str
    domain: str
    exp: float
    nbf: float | None
    generation: int


class JwtSvidVerifier:
    """JWT-SVIDs for one resource: its audiences, its bundles, its leeway."""

    def __init__(self, audiences: tuple[str, ...], bundles: dict[str, str], skew: int, clock: Clock) -> None:
        self.audiences = frozenset(audiences)
        self.skew = skew
        self.clock = clock
        self.bundles = {domain: BundleFile(domain, path, clock) for domain, path in bundles.items()}
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()

    def verify(self, token: str) -> str:
        """The SPIFFE ID (``sub``) of a valid JWT-SVID, or ``SvidError``."""
        if len(token) > MAX_SVID_BYTES:
            raise SvidError(f"the JWT-SVID is larger than {MAX_SVID_BYTES} bytes")
        if not token.isascii() or not _COMPACT.match(token):
            raise SvidError("the JWT-SVID is not a compact JWS (three base64url segments)")
        digest = hashlib.sha256(token.encode("ascii")).digest()
        verified = self._cache.get(digest)
        if verified is not None:
            bundle = self.bundles[verified.domain]
            bundle.current()
            if bundle.generation != verified.generation:
                verified = None
        if verified is None:
            verified = self._verify_uncached(token)
            if len(self._cache) >= CACHE_ENTRIES:
                self._cache.popitem(last=False)
            self._cache[digest] = verified
        self._check_times(verified.exp, verified.nbf)
        return verified.spiffe_id

    def _verify_uncached(self, token: str) -> _Verified:
        header_b64, payload_b64, _ = token.split(".")
        header = _json_segment(header_b64, "header")
        alg = _check_header(header)
        claims = _json_segment(payload_b64, "payload")
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise SvidError("the JWT-SVID has no sub claim (the workload's SPIFFE ID)")
        domain = trust_domain(sub)
        bundle = self.bundles.get(domain)
        if bundle is None:
            raise SvidError("the JWT-SVID's trust domain is not trusted by this resource")
        keys = bundle.current()
        kid = header.get("kid")
        candidates = [keys[kid]] if kid in keys else [] if kid is not None else list(keys.values())[:MAX_KEY_TRIES]
        candidates = [key for key in candidates if alg in key.algorithms]
        if not candidates:
            raise SvidError("no jwt-svid key of the trust domain's bundle fits the JWT-SVID's kid and alg")
        if not any(_signature_valid(token, key.key, alg) for key in candidates):
            raise SvidError("the JWT-SVID's signature is invalid")
        exp, nbf = self._check_claims(claims)
        return _Verified(sub, domain, exp, nbf, bundle.generation)

    def _check_claims(self, claims: dict[str, Any]) -> tuple[float, float | None]:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) for a in audiences):
            raise SvidError("the JWT-SVID's aud claim must be a string or a non-empty array of strings")
        if self.audiences.isdisjoint(audiences):
            raise SvidError("the JWT-SVID's audience does not include this resource")
        exp = _numeric(claims, "exp")
        if exp is None:
            raise SvidError("the JWT-SVID has no exp claim")
        return exp, _numeric(claims, "nbf")

    def _check_times(self, exp: float, nbf: float | None) -> None:
        now = self.clock.time()
        if exp <= now - self.skew:
            raise SvidError("the JWT-SVID has expired")
        if nbf is not None and nbf > now + self.skew:
            raise SvidError("the JWT-SVID is not valid yet (nbf)")


def _check_header(header: dict[str, Any]) -> str:
    extra = header.keys() - _HEADER_MEMBERS
    if extra:
        raise SvidError("the JWT-SVID header may hold only alg, kid and typ (JWT-SVID section 2)")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SVID_ALGORITHMS:
        raise SvidError("the JWT-SVID's alg must be one of " + ", ".join(sorted(SVID_ALGORITHMS)))
    typ = header.get("typ")
    if typ is not None and typ not in _TYPES:
        raise SvidError("the JWT-SVID's typ, when present, must be JWT or JOSE")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > 256):
        raise SvidError("the JWT-SVID's kid must be a string of at most 256 characters")
    return alg


def _signature_valid(token: str, key: Key, alg: str) -> bool:
    try:
        jws.deserialize_compact(token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError):
        return False
    return True


def _numeric(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SvidError(f"the JWT-SVID's {name} claim must be a NumericDate")
    return float(value)


def _json_segment(segment: str, name: str) -> dict[str, Any]:
    try:
        return strictjson.jws_segment(segment, MAX_SVID_BYTES)
    except strictjson.StrictJSONError as exc:
        raise SvidError(f"the JWT-SVID {name} {exc}") from exc
