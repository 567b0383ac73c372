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
6. claims: required set with strict types, exact ``iss``, ``exp``/``nbf``/``iat`` with
   skew (joserfc's claims registry, always run), ``aud`` contains the resource,
   ``client_id`` and ``act`` well-formed.

A verified token is cached by its SHA-256 until it expires or its issuer's key set
changes; ``exp``/``nbf`` and the resource checks run again on every hit.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from enforcer.auth import strictjson
from enforcer.auth.jwks import IssuerKeys
from enforcer.clock import Clock
from enforcer.context import Principal
from enforcer.errors import InvalidToken
from enforcer.policy.model import Issuer

_COMPACT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_KEY_BEARING_HEADERS = ("jku", "x5u", "jwk", "x5c")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: RFC 6749 section 3.3 scope tokens (%x21 / %x23-5B / %x5D-7E) separated by spaces; split on " " only
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e ]*\Z")
MAX_HEADER_BYTES = 4096
MAX_AUD_ENTRIES = 32
MAX_ACT_DEPTH = 10
CACHE_ENTRIES = 10_000
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z: later values are an attack, not a date


@dataclass(frozen=True)
class VerifiedToken:
    principal: Principal
    audiences: frozenset[str]
    nbf: float | None
    generation: int


def token_hash(token: str) -> str:
    """The short form of a token that may appear in logs and audit records."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()[:16]


def canonical_resource(uri: str) -> str:
    """Lower-case scheme and host only (MCP canonical URI rule); path stays case-sensitive."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, parts.fragment))


class TokenVerifier:
    def __init__(self, keys: dict[str, IssuerKeys], clock: Clock) -> None:
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
        principal, audiences, nbf = self._check_claims(token, claims, issuer)
        return VerifiedToken(principal, audiences, nbf, issuer_keys.generation)

    def _issuer_for(self, claims: dict[str, Any], issuer_ids: tuple[str, ...]) -> IssuerKeys:
        iss = claims.get("iss")
        if not isinstance(iss, str):
            raise InvalidToken("the token has no iss claim")
        for issuer_id in issuer_ids:
            if self.keys[issuer_id].issuer.issuer == iss:
                return self.keys[issuer_id]
        raise InvalidToken("the token's issuer (iss) is not accepted by this resource")

    def _check_claims(
        self, token: str, claims: dict[str, Any], issuer: Issuer
    ) -> tuple[Principal, frozenset[str], float | None]:
        registry = JWTClaimsRegistry(
            now=int(self.clock.time()),
            leeway=issuer.clock_skew_seconds,
            iss={"essential": True, "value": issuer.issuer},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidToken(_claim_error_text(exc)) from exc
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is not None and not 0 <= value <= MAX_NUMERIC_DATE:
                raise InvalidToken(f"the token's {name} claim is not a plausible NumericDate")
        audiences = _audiences(claims.get("aud"))
        client_id = _required_string(claims, "client_id")
        sub = _required_string(claims, "sub")
        jti = _required_string(claims, "jti")
        scope = claims.get("scope", "")
        if not isinstance(scope, str) or not _SCOPE.match(scope):
            raise InvalidToken("the scope claim must be scope tokens separated by single spaces (RFC 6749 3.3)")
        act = claims.get("act")
        if act is not None:
            _check_act(act, 1)
        principal = Principal(
            issuer_id=issuer.id, iss=issuer.issuer, sub=sub, client_id=client_id,
            scopes=frozenset(scope.split(" ")) - {""}, jti=jti, exp=int(claims["exp"]),
            token_hash=token_hash(token), act=act, claims=claims,
        )
        nbf = claims.get("nbf")
        return principal, audiences, nbf


def _json_segment(segment: str, name: str, max_bytes: int) -> dict[str, Any]:
    if len(segment) % 4 == 1:
        raise InvalidToken(f"the token {name} is not valid base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise InvalidToken(f"the token {name} is not canonical base64url")
    try:
        value = strictjson.loads(raw, max_bytes=max_bytes)
    except strictjson.StrictJSONError as exc:
        raise InvalidToken(f"the token {name} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise InvalidToken(f"the token {name} is not a JSON object")
    return value


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


def _required_string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"the token's {name} claim must be a non-empty string")
    if _CONTROL.search(value) or len(value) > 1024:
        raise InvalidToken(f"the token's {name} claim contains control characters or is too long")
    return value


def _audiences(aud: Any) -> frozenset[str]:
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or len(values) > MAX_AUD_ENTRIES:
        raise InvalidToken("the token's aud claim must be a string or a short array of strings")
    if not all(isinstance(v, str) for v in values):
        raise InvalidToken("the token's aud claim must contain only strings")
    try:
        return frozenset(canonical_resource(v) for v in values)
    except ValueError as exc:  # urlsplit refuses some strings (e.g. "http://[::1")
        raise InvalidToken("the token's aud claim holds a value that is not a URI") from exc


def _check_act(act: Any, depth: int) -> None:
    if depth > MAX_ACT_DEPTH:
        raise InvalidToken(f"the token's act chain is deeper than {MAX_ACT_DEPTH}")
    if not isinstance(act, dict) or not isinstance(act.get("sub"), str):
        raise InvalidToken("each act claim must be an object with a string sub")
    if "act" in act:
        _check_act(act["act"], depth + 1)


def _claim_error_text(exc: JoseError) -> str:
    name = type(exc).__name__
    if name == "ExpiredTokenError":
        return "the token has expired"
    if name == "MissingClaimError":
        return f"the token lacks required claims: {exc.description}"
    return f"the token's claims are invalid: {exc.description}"
