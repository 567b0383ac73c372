"""Agents' signature keys: which key verifies a request signature, with which algorithm.

A key is bound to one RFC 9421 algorithm when it is loaded (its JWK ``alg``, else the
curve; RSA keys must say ``alg`` because two RSA algorithms exist), so a signature's
``alg`` parameter can only confirm it (RFC 9421 3.2 step 6). The cryptography is the
``http-message-signatures`` package's algorithm classes over ``cryptography``; this
module adds what a verifier must check before calling them (exact ECDSA lengths, r and
s in range) and where keys come from:

- ``jwks_file`` / ``jwks_uri``: a key set cached like an issuer's (``jwks.KeyCache``),
  looked up by ``keyid``, which is only ever a dictionary key (no URLs, no paths);
- ``shared_secrets_file``: ``oct`` keys, the only way ``hmac-sha256`` is accepted;
- ``from_token_cnf``: the verified access token's ``cnf.jwk``, or ``cnf.jkt`` matched
  against the key set, so the signature is bound to the token it travels with.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from http_message_signatures import algorithms
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from joserfc.jwk import Key

from enforcer.auth.jwks import KeyCache, KeySetSettings, import_jwk, parse_key_set, signing_jwk_kid
from enforcer.auth.keysources import FileKeySource, UriKeySource
from enforcer.clock import Clock
from enforcer.context import Principal
from enforcer.policy.model import SignatureKeys

#: JOSE names (JWK ``alg``) -> RFC 9421 names (DESIGN.md section 3).
JOSE_TO_RFC9421 = {
    "EdDSA": "ed25519", "Ed25519": "ed25519", "ES256": "ecdsa-p256-sha256", "ES384": "ecdsa-p384-sha384",
    "PS512": "rsa-pss-sha512", "RS256": "rsa-v1_5-sha256", "HS256": "hmac-sha256",
}
_BY_CURVE = {"Ed25519": "ed25519", "P-256": "ecdsa-p256-sha256", "P-384": "ecdsa-p384-sha384"}
ALGORITHM_CLASSES: dict[str, type[algorithms.HTTPSignatureAlgorithm]] = {
    cls.algorithm_id: cls for cls in (algorithms.ED25519, algorithms.ECDSA_P256_SHA256, algorithms.ECDSA_P384_SHA384,
                                      algorithms.RSA_PSS_SHA512, algorithms.RSA_V1_5_SHA256, algorithms.HMAC_SHA256)
}
#: group orders of the ECDSA curves, for the r, s range check (SEC 2)
_ECDSA_ORDER = {
    "ecdsa-p256-sha256": (32, 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551),
    "ecdsa-p384-sha384": (48, int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
                                  "581A0DB248B0A77AECEC196ACCC52973", 16)),
}


@dataclass(frozen=True)
class SignatureKey:
    """One agent key, bound to one RFC 9421 algorithm."""

    kid: str
    alg: str
    key: Key  # the JWK, for the cache's change detection
    _verifier: Any
    thumbprint: str  # RFC 7638, computed once: it names the key in nonces and audit records

    def verify(self, signature: bytes, base: bytes) -> bool:
        """Whether ``signature`` is this key's signature over ``base``; never raises."""
        if self.alg in _ECDSA_ORDER and not _ecdsa_in_range(signature, *_ECDSA_ORDER[self.alg]):
            return False
        try:
            self._verifier.verify(signature, base)
        except (CryptoInvalidSignature, HTTPMessageSignaturesException, ValueError):
            return False
        return True


def _ecdsa_in_range(signature: bytes, size: int, order: int) -> bool:
    """Raw r||s of exactly twice the coordinate size, with 0 < r, s < n (RFC 9421 3.3.4/3.3.5)."""
    if len(signature) != 2 * size:
        return False
    r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    return 0 < r < order and 0 < s < order


def signature_key(jwk: Any, allowed: tuple[str, ...], *, shared_secret: bool = False) -> SignatureKey:
    """A ``SignatureKey`` from a JWK, or ``ValueError`` saying why it cannot be one."""
    kid = signing_jwk_kid(jwk)
    kty = jwk.get("kty")
    if shared_secret != (kty == "oct"):
        raise ValueError("shared secrets (kty oct) belong in shared_secrets_file and nowhere else")
    if not shared_secret and {"d", "p", "q", "k"} & jwk.keys():
        raise ValueError("contains private key material; publish public keys only")
    alg = bind_algorithm(jwk)
    if alg not in allowed:
        raise ValueError(f"algorithm {alg} is not allowed for this resource")
    key = import_jwk(jwk)
    verifier = ALGORITHM_CLASSES[alg](public_key=key.raw_value)
    return SignatureKey(kid, alg, key, verifier, key.thumbprint())


def bind_algorithm(jwk: dict[str, Any]) -> str:
    """The one RFC 9421 algorithm a JWK may be used with (its ``alg``, else its curve)."""
    declared, kty = jwk.get("alg"), jwk.get("kty")
    if declared is not None:
        alg = JOSE_TO_RFC9421.get(declared) if isinstance(declared, str) else None
        if alg is None:
            raise ValueError(f"alg {str(declared)[:16]!r} has no RFC 9421 equivalent")
    elif kty in ("EC", "OKP"):
        alg = _BY_CURVE.get(str(jwk.get("crv")))
        if alg is None:
            raise ValueError(f"curve {str(jwk.get('crv'))[:16]!r} is not usable for RFC 9421 signatures")
    elif kty == "oct":
        alg = "hmac-sha256"
    elif kty == "RSA":
        raise ValueError("an RSA key must state alg (PS512 or RS256): its type alone does not fix the algorithm")
    else:
        raise ValueError(f"unsupported kty {str(kty)[:16]!r}")
    family = {"ed25519": "OKP", "ecdsa-p256-sha256": "EC", "ecdsa-p384-sha384": "EC", "rsa-pss-sha512": "RSA",
              "rsa-v1_5-sha256": "RSA", "hmac-sha256": "oct"}[alg]
    if kty != family or (kty in ("EC", "OKP") and _BY_CURVE.get(str(jwk.get("crv"))) != alg):
        raise ValueError(f"alg {declared} does not fit a {kty} key")
    return alg


def parse_signature_jwks(data: bytes, allowed: tuple[str, ...], *,
                         shared_secret: bool = False) -> tuple[dict[str, SignatureKey], list[str]]:
    """Usable agent keys by kid (every key needs one: ``keyid`` names it), and skip notes."""
    return parse_key_set(data, lambda jwk: signature_key(jwk, allowed, shared_secret=shared_secret),
                         require_kid=True)


class KeyNotFound(Exception):
    """No acceptable key for this signature; ``failure`` is the short code for the client."""

    def __init__(self, message: str, failure: str = "unknown_key") -> None:
        super().__init__(message)
        self.failure = failure


class SignatureKeyring:
    """The keys one resource accepts request signatures from (see the module docstring)."""

    CNF_CACHE_SIZE = 4096

    def __init__(self, resource_id: str, config: SignatureKeys, allowed: tuple[str, ...], clock: Clock,
                 http: httpx.AsyncClient) -> None:
        self.allowed = allowed
        self.from_token_cnf = config.from_token_cnf
        self.caches: list[KeyCache] = []
        interval = config.jwks_refetch_interval_seconds
        if config.shared_secrets_file:
            self.caches.append(KeyCache(KeySetSettings(f"{resource_id}/shared-secrets", interval),
                                        FileKeySource(config.shared_secrets_file), clock,
                                        partial(parse_signature_jwks, allowed=allowed, shared_secret=True)))
        if config.jwks_file or config.jwks_uri:
            source = (FileKeySource(config.jwks_file) if config.jwks_file
                      else UriKeySource(str(config.jwks_uri), http))
            self.caches.append(KeyCache(KeySetSettings(f"{resource_id}/signature-keys", interval), source, clock,
                                        partial(parse_signature_jwks, allowed=allowed)))
        self._cnf_keys: OrderedDict[str, SignatureKey] = OrderedDict()

    async def resolve(self, keyid: str | None, principal: Principal) -> SignatureKey:
        """The key that must have made a signature naming ``keyid``, for this token's caller."""
        if self.from_token_cnf:
            return await self._token_bound(keyid, principal)
        if keyid is None:
            raise KeyNotFound("the signature has no keyid parameter; name the key that signed it")
        key = await self._lookup(keyid)
        if key is None:
            raise KeyNotFound("the signature's keyid names no key this resource trusts")
        return key

    async def _lookup(self, keyid: str) -> SignatureKey | None:
        for cache in self.caches:
            key = await cache.get_or_refetch(keyid)
            if key is not None:
                return key
        return None

    async def _token_bound(self, keyid: str | None, principal: Principal) -> SignatureKey:
        cnf = principal.claims.get("cnf")
        if not isinstance(cnf, dict) or not ({"jwk", "jkt"} & cnf.keys()):
            raise KeyNotFound("this resource takes the signing key from the token's cnf claim, and the token "
                              "has neither cnf.jwk nor cnf.jkt", "token_not_bound")
        if "jwk" in cnf:
            key = self._cnf_key(cnf["jwk"])
            if keyid is not None and keyid not in (key.kid, key.thumbprint):
                raise KeyNotFound("the signature's keyid does not name the key bound to the token", "key_not_bound")
            return key
        jkt = cnf["jkt"]
        key = await self._lookup(keyid) if keyid is not None else None
        if key is None:
            raise KeyNotFound("the token binds a key by thumbprint (cnf.jkt); name a known key in keyid")
        if not isinstance(jkt, str) or key.thumbprint != jkt:
            raise KeyNotFound("the signing key is not the key bound to the token (cnf.jkt)", "key_not_bound")
        return key

    def _cnf_key(self, jwk: Any) -> SignatureKey:
        """The token's ``cnf.jwk`` as a key; parsed once per distinct JWK, not per request."""
        cache_key = json.dumps(jwk, sort_keys=True)
        key = self._cnf_keys.get(cache_key)
        if key is not None:
            self._cnf_keys.move_to_end(cache_key)
            return key
        try:
            key = signature_key(jwk, self.allowed)
        except ValueError as exc:
            raise KeyNotFound(f"the token's cnf.jwk cannot verify signatures here: {exc}", "token_not_bound") from exc
        self._cnf_keys[cache_key] = key
        if len(self._cnf_keys) > self.CNF_CACHE_SIZE:
            self._cnf_keys.popitem(last=False)
        return key
