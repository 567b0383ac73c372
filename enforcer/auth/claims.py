"""The claims of an access token whose signature verified: required, well-typed, in time.

joserfc's claims registry always runs (exact ``iss``; ``exp``/``nbf``/``iat`` with the
issuer's skew; booleans, NaN and infinities refused); the checks here add what RFC 9068 and
the proxy need on top: NumericDates within a plausible range, ``aud`` as a short list of
URIs, ``client_id``/``sub``/``jti`` as non-empty strings without control characters, ``scope``
as RFC 6749 scope tokens split on single spaces, and a bounded ``act`` chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc.errors import JoseError
from joserfc.jwt import JWTClaimsRegistry

from enforcer.errors import InvalidToken
from enforcer.policy.model import Issuer

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: RFC 6749 section 3.3 scope tokens (%x21 / %x23-5B / %x5D-7E) separated by spaces; split on " " only
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e ]*\Z")
MAX_AUD_ENTRIES = 32
MAX_ACT_DEPTH = 10
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z: later values are an attack, not a date


@dataclass(frozen=True)
class CheckedClaims:
    sub: str
    client_id: str
    jti: str
    scopes: frozenset[str]
    exp: int
    nbf: float | None
    audiences: frozenset[str]  # canonical forms
    act: dict[str, Any] | None
    cnf: dict[str, Any] | None = None  # RFC 7800 confirmation (``check_cnf``)


def canonical_resource(uri: str) -> str:
    """Lower-case scheme and host only (MCP canonical URI rule); path stays case-sensitive."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, parts.fragment))


def check_claims(claims: dict[str, Any], issuer: Issuer, now: int) -> CheckedClaims:
    """Every claim check, or ``InvalidToken`` naming the first claim that failed."""
    registry = JWTClaimsRegistry(
        now=now,
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
    audiences = parse_audiences(claims.get("aud"))
    scope = claims.get("scope", "")
    if not isinstance(scope, str) or not _SCOPE.match(scope):
        raise InvalidToken("the scope claim must be scope tokens separated by single spaces (RFC 6749 3.3)")
    act = claims.get("act")
    if act is not None:
        check_act(act)
    return CheckedClaims(
        sub=_required_string(claims, "sub"), client_id=_required_string(claims, "client_id"),
        jti=_required_string(claims, "jti"), scopes=frozenset(scope.split(" ")) - {""},
        exp=int(claims["exp"]), nbf=claims.get("nbf"), audiences=audiences, act=act,
        cnf=check_cnf(claims.get("cnf")),
    )


#: RFC 9449 section 6.1: ``cnf.jkt`` is the base64url SHA-256 JWK thumbprint (RFC 7638), 43 characters
_JKT = re.compile(r"[A-Za-z0-9_-]{43}\Z")


def check_cnf(cnf: Any) -> dict[str, Any] | None:
    """The ``cnf`` claim (RFC 7800) when present: a JSON object, whose ``jkt`` (DPoP binding),
    when present, is a well-formed thumbprint; anything else is an invalid token."""
    if cnf is None:
        return None
    if not isinstance(cnf, dict):
        raise InvalidToken("the token's cnf claim must be a JSON object (RFC 7800)")
    jkt = cnf.get("jkt")
    if "jkt" in cnf and not (isinstance(jkt, str) and _JKT.match(jkt)):
        raise InvalidToken("the token's cnf.jkt must be a base64url SHA-256 JWK thumbprint (RFC 9449 6.1)")
    return cnf


def _required_string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"the token's {name} claim must be a non-empty string")
    if _CONTROL.search(value) or len(value) > 1024:
        raise InvalidToken(f"the token's {name} claim contains control characters or is too long")
    return value


def parse_audiences(aud: Any) -> frozenset[str]:
    """The canonical forms of an ``aud`` claim, or ``InvalidToken`` (``policy explain`` shares it)."""
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or len(values) > MAX_AUD_ENTRIES:
        raise InvalidToken("the token's aud claim must be a string or a short array of strings")
    if not all(isinstance(v, str) for v in values):
        raise InvalidToken("the token's aud claim must contain only strings")
    try:
        return frozenset(canonical_resource(v) for v in values)
    except ValueError as exc:  # urlsplit refuses some strings (e.g. "http://[::1")
        raise InvalidToken("the token's aud claim holds a value that is not a URI") from exc


def check_act(act: Any, depth: int = 1) -> None:
    """An RFC 8693 ``act`` chain: objects with a non-empty string ``sub`` (and a string ``iss``
    when given), nested at most ``MAX_ACT_DEPTH`` deep; anything else is an invalid token."""
    if depth > MAX_ACT_DEPTH:
        raise InvalidToken(f"the token's act chain is deeper than {MAX_ACT_DEPTH}")
    if not isinstance(act, dict) or not isinstance(act.get("sub"), str) or not act["sub"]:
        raise InvalidToken("each act claim must be an object with a non-empty string sub")
    if "iss" in act and not isinstance(act["iss"], str):
        raise InvalidToken("an act claim's iss must be a string")
    if "act" in act:
        check_act(act["act"], depth + 1)


def _claim_error_text(exc: JoseError) -> str:
    name = type(exc).__name__
    if name == "ExpiredTokenError":
        return "the token has expired"
    if name == "MissingClaimError":
        return f"the token lacks required claims: {exc.description}"
    return f"the token's claims are invalid: {exc.description}"
