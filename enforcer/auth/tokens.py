"""Access-token verification: RFC 9068 JWTs, audience-bound per RFC 8707.

Order (cheap and structural first, crypto after, claims always):

1. size cap; compact JWS syntax only (three canonical base64url segments, so JWE,
   JSON serialization, padding and stray characters are all refused);
2. header and payload parsed as strict JSON (no duplicate members);
3. the issuer is chosen by exact ``iss`` among the resource's issuers; then ``typ``,
   ``alg`` (case-sensitive, from that issuer's allowlist), no ``crit``, no ``cty``, and
   no key-bearing headers (``jku``/``x5u``/``jwk``/``x5c``: keys only come from config);
4. the key comes from that issuer's cache by ``kid`` and must be bound to ``alg``;
5. joserfc verifies the signature with that single key and algorithm;
6. claims (``claims.py``): required set with strict types, exact ``iss``,
   ``exp``/``nbf``/``iat`` with skew (joserfc's claims registry, always run), ``aud``
   contains the resource, ``client_id``, ``scope`` and ``act`` well-formed.

A verified token is cached by its SHA-256 until it expires or its issuer's key set
changes; ``exp``/``nbf`` and the resource checks run again on every hit.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError

from enforcer.auth import strictjson
from enforcer.auth.claims import canonical_resource, check_claims
from enforcer.auth.jwks import KeyCache
from enforcer.clock import Clock
from enforcer.context import Principal
from enforcer.errors import InvalidToken
from enforcer.policy.model import Issuer

_COMPACT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_KEY_BEARING_HEADERS = ("jku", "x5u", "jwk", "x5c")
MAX_HEADER_BYTES = 4096
CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class VerifiedToken:
    principal: Principal
    audiences: frozenset[str]
    nbf: float | None
    generation: int


def token_hash(token: str) -> str:
    """The short form of a token that may appear in logs and audit records."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()[:16]


class TokenVerifier:
    def __init__(self, keys: dict[str, KeyCache], clock: Clock) -> None:
        self.keys = keys
        self.clock = clock
        self.max_token_bytes = max((k.issuer.max_token_bytes for k in keys.values()), default=8192)
        self._cache: OrderedDict[bytes, VerifiedToken] = OrderedDict()
        self._audience: dict[str, str] = {}  # resource identifier -> its canonical form

    async def verify(self, token: str, issuer_ids: tuple[str, ...], resource: str) -> Principal:
        """Verify ``token`` for a resource identified by ``resource`` accepting ``issuer_ids``."""
        digest, verified = self._lookup(token)
        if verified is None:
            verified = await self._verify_uncached(token, issuer_ids)
            self._remember(digest, verified)
        return self._accept(token, verified, issuer_ids, resource)

    def verify_cached(self, token: str, issuer_ids: tuple[str, ...], resource: str) -> Principal | None:
        """``verify`` without awaiting, for a token already verified (``None`` otherwise): the
        common case of an agent reusing its token, kept off the coroutine machinery."""
        _, verified = self._lookup(token)
        return None if verified is None else self._accept(token, verified, issuer_ids, resource)

    def _lookup(self, token: str) -> tuple[bytes, VerifiedToken | None]:
        if len(token) > self.max_token_bytes:
            raise InvalidToken(f"the token is larger than {self.max_token_bytes} bytes")
        if not token.isascii():
            raise InvalidToken("the token is not a compact JWS (three base64url segments)")
        digest = hashlib.sha256(token.encode("ascii")).digest()
        verified = self._cache.get(digest)
        if verified is not None and verified.generation != self.keys[verified.principal.issuer_id].generation:
            verified = None  # the issuer's keys changed since: verify again
        return digest, verified

    def _accept(self, token: str, verified: VerifiedToken, issuer_ids: tuple[str, ...], resource: str) -> Principal:
        """The checks that depend on the request, not the token: run on every request."""
        principal = verified.principal
        if principal.issuer_id not in issuer_ids:
            raise InvalidToken("the token's issuer is not accepted by this resource")
        issuer = self.keys[principal.issuer_id].issuer
        if len(token) > issuer.max_token_bytes:
            raise InvalidToken(f"the token is larger than its issuer's limit of {issuer.max_token_bytes} bytes")
        self._check_times(verified, issuer.clock_skew_seconds)
        audience = self._audience.get(resource)
        if audience is None:
            audience = self._audience[resource] = canonical_resource(resource)
        if audience not in verified.audiences:
            raise InvalidToken(f"the token's audience does not include {resource}; request a token for it")
        return principal

    def _remember(self, digest: bytes, verified: VerifiedToken) -> None:
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.popitem(last=False)
        self._cache[digest] = verified

    def _check_times(self, verified: VerifiedToken, skew: int) -> None:
        now = self.clock.time()
        if verified.principal.exp <= now - skew:
            raise InvalidToken("the token has expired")
        if verified.nbf is not None and verified.nbf > now + skew:
            raise InvalidToken("the token is not valid yet (nbf)")

    async def _verify_uncached(self, token: str, issuer_ids: tuple[str, ...]) -> VerifiedToken:
        if not _COMPACT.match(token):
            raise InvalidToken("the token is not a compact JWS (three base64url segments)")
        header_b64, payload_b64, _ = token.split(".")
        header = _json_segment(header_b64, "header", MAX_HEADER_BYTES)
        claims = _json_segment(payload_b64, "payload", self.max_token_bytes)
        issuer_keys = self._issuer_for(claims, issuer_ids)
        issuer = issuer_keys.issuer
        alg = _check_header(header, issuer)
        kid = header.get("kid")
        key = await issuer_keys.get_or_refetch(kid)
        if key is None:
            if not issuer_keys.ready:
                raise InvalidToken("the issuer's signing keys are unavailable right now; retry later")
            raise InvalidToken("the token's kid is not among the issuer's current keys")
        if key.alg != alg:
            raise InvalidToken("the token's alg does not match the algorithm bound to its key")
        try:
            jws.deserialize_compact(token, key.key, algorithms=[key.alg])
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidToken("the token's signature is invalid") from exc
        checked = check_claims(claims, issuer, int(self.clock.time()))
        principal = Principal(
            issuer_id=issuer.id, iss=issuer.issuer, sub=checked.sub, client_id=checked.client_id,
            scopes=checked.scopes, jti=checked.jti, exp=checked.exp, token_hash=token_hash(token),
            act=checked.act, claims=claims, cnf=checked.cnf,
        )
        return VerifiedToken(principal, checked.audiences, checked.nbf, issuer_keys.generation)

    def _issuer_for(self, claims: dict[str, Any], issuer_ids: tuple[str, ...]) -> KeyCache:
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise InvalidToken("the token has no iss claim")
        for issuer_id in issuer_ids:
            if self.keys[issuer_id].issuer.issuer == iss:
                return self.keys[issuer_id]
        raise InvalidToken("the token's issuer (iss) is not accepted by this resource")


def _json_segment(segment: str, name: str, max_bytes: int) -> dict[str, Any]:
    try:
        return strictjson.jws_segment(segment, max_bytes)
    except strictjson.StrictJSONError as exc:
        raise InvalidToken(f"the token {name} {exc}") from exc


def _check_header(header: dict[str, Any], issuer: Issuer) -> str:
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in {t.lower() for t in issuer.token_types}:
        raise InvalidToken("the token is not an access token (typ must be at+jwt)")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in issuer.algorithms:
        raise InvalidToken("the token's alg is not allowed for its issuer")
    if "crit" in header:
        raise InvalidToken("the token has a crit header; no JWS extensions are accepted")
    if "cty" in header or "enc" in header or "zip" in header:
        raise InvalidToken("nested or encrypted tokens are not accepted")
    for name in _KEY_BEARING_HEADERS:
        if name in header:
            raise InvalidToken(f"the token carries a {name} header; keys come only from the issuer's configuration")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
        raise InvalidToken("the token's kid must be a string of at most 256 characters")
    return alg
