"""Issuer signing keys: loading a JWKS safely and keeping it fresh.

Keys are namespaced by issuer (a ``kid`` of issuer A never verifies a token of issuer
B) and each key is bound to exactly one algorithm when it is loaded, so the token's
``alg`` header can only ever confirm that binding, never choose it. The cache follows
Envoy's jwt_authn split: a *source* (``keysources.py``: file, URI, discovery) fetches bytes, ``parse_jwks``
turns them into ``VerifierKey``s, ``KeyCache`` keeps the last good set, refreshes it
on ``Cache-Control: max-age`` (bounded by the issuer's min/max), refetches at most once
per interval when an unknown ``kid`` shows up, and keeps serving the last good keys when
a refresh fails (stale-if-error), recording the failure for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

from enforcer.auth import strictjson
from enforcer.auth.keysources import MAX_JWKS_BYTES, FileKeySource, KeySource, KeySourceError
from enforcer.clock import Clock

log = logging.getLogger("enforcer.jwks")

MAX_KEYS = 100
MIN_RSA_BITS = 2048
MIN_SECRET_BYTES = 32
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVE_ALGORITHMS = {"P-256": {"ES256"}, "P-384": {"ES384"}, "P-521": {"ES512"}, "Ed25519": {"EdDSA", "Ed25519"}}
_RSA_ALGORITHMS = ("RS256", "PS256", "RS384", "PS384", "RS512", "PS512")


@dataclass(frozen=True)
class VerifierKey:
    kid: str
    alg: str
    key: Key


def parse_jwks(data: bytes, algorithms: tuple[str, ...]) -> tuple[dict[str, VerifierKey], list[str]]:
    """Usable issuer keys by kid, and a note for each key that was skipped (and why)."""
    return parse_key_set(data, lambda jwk: _verifier_key(jwk, algorithms))


def parse_key_set(data: bytes, make_key: Callable[[Any], Any], *,
                  require_kid: bool = False) -> tuple[dict[str, Any], list[str]]:
    """The keys ``make_key`` accepts from a JWKS document, by kid, and a note for each JWK it
    refused (its ``ValueError``), repeated, or (with ``require_kid``) left without a kid."""
    try:
        document = strictjson.loads(data, max_bytes=MAX_JWKS_BYTES)
    except strictjson.StrictJSONError as exc:
        raise KeySourceError(f"JWKS is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySourceError("JWKS must be an object with a 'keys' array")
    keys: dict[str, Any] = {}
    skipped: list[str] = []
    for index, jwk in enumerate(document["keys"][:MAX_KEYS]):
        try:
            key = make_key(jwk)
        except ValueError as exc:
            skipped.append(f"key {index}: {exc}")
            continue
        if require_kid and not key.kid:
            skipped.append(f"key {index}: every key needs a kid of its own")
        elif key.kid in keys:
            skipped.append(f"key {index}: kid {key.kid[:40]!r} appears twice; the first one is kept")
        else:
            keys[key.kid] = key
    return keys, skipped


def signing_jwk_kid(jwk: Any) -> str:
    """The kid of a JWK meant for signatures (``""`` when it has none), or ``ValueError``."""
    if not isinstance(jwk, dict):
        raise ValueError("not an object")
    kid = jwk.get("kid", "")
    if not isinstance(kid, str) or len(kid) > 256:
        raise ValueError("kid must be a string of at most 256 characters")
    if jwk.get("use", "sig") != "sig":
        raise ValueError("use is not 'sig'")
    return kid


def _verifier_key(jwk: Any, algorithms: tuple[str, ...]) -> VerifierKey:
    kid = signing_jwk_kid(jwk)
    if _PRIVATE_MEMBERS & jwk.keys():
        raise ValueError("contains private or symmetric key material; publish public keys only")
    alg = _bind_algorithm(jwk, algorithms)
    return VerifierKey(kid, alg, import_jwk(jwk))


def import_jwk(jwk: dict[str, Any]) -> Key:
    """A joserfc key from a JWK (RSA of at least 2048 bits, EC, OKP, or an oct secret of
    at least 32 bytes), or ``ValueError`` saying why not. Whether private members or
    secrets are acceptable is the caller's decision."""
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            key: Key = RSAKey.import_key(jwk)
            if key.raw_value.key_size < MIN_RSA_BITS:
                raise ValueError(f"RSA key shorter than {MIN_RSA_BITS} bits")
        elif kty == "EC":
            key = ECKey.import_key(jwk)
        elif kty == "OKP":
            key = OKPKey.import_key(jwk)
        elif kty == "oct":
            key = OctKey.import_key(jwk)
            if len(key.raw_value) < MIN_SECRET_BYTES:
                raise ValueError(f"shared secret shorter than {MIN_SECRET_BYTES} bytes")
        else:
            raise ValueError(f"unsupported kty {str(kty)[:16]!r}")
    except ValueError:
        raise
    except Exception as exc:  # joserfc raises several types for malformed members
        raise ValueError(f"malformed key ({type(exc).__name__})") from exc
    return key


def _bind_algorithm(jwk: dict[str, Any], algorithms: tuple[str, ...]) -> str:
    """The one algorithm this key may verify: its ``alg``, else implied by its type."""
    kty, declared = jwk.get("kty"), jwk.get("alg")
    if kty == "RSA":
        possible: set[str] = set(_RSA_ALGORITHMS)
    elif kty in ("EC", "OKP"):
        possible = _CURVE_ALGORITHMS.get(str(jwk.get("crv")), set())
    else:
        raise ValueError(f"unsupported kty {str(kty)[:16]!r}")
    if declared is not None:
        if declared not in possible or declared not in algorithms:
            raise ValueError(f"alg {str(declared)[:16]!r} does not fit the key or is not allowed for this issuer")
        return declared
    allowed = [a for a in algorithms if a in possible]
    if not allowed:
        raise ValueError("no allowed algorithm fits this key")
    return allowed[0]  # RSA without alg: the first RSA algorithm in the issuer's list


class CacheSettings(Protocol):
    """How long a key set is kept (an ``Issuer`` has these fields, so does ``KeySetSettings``)."""

    @property
    def id(self) -> str: ...
    @property
    def jwks_refetch_interval_seconds(self) -> int: ...
    @property
    def jwks_min_cache_seconds(self) -> int: ...
    @property
    def jwks_max_cache_seconds(self) -> int: ...


@dataclass(frozen=True)
class KeySetSettings:
    """Cache bounds for key sets that are not an issuer's (agents' signature keys)."""

    id: str
    jwks_refetch_interval_seconds: int = 10
    jwks_min_cache_seconds: int = 60
    jwks_max_cache_seconds: int = 3600


class _Keyed(Protocol):
    @property
    def alg(self) -> str: ...
    @property
    def key(self) -> Key: ...


def _fingerprint(keys: dict[str, _Keyed]) -> dict[str, tuple[str, str]]:
    return {kid: (key.alg, key.key.thumbprint()) for kid, key in keys.items()}


class KeyCache:
    """The current keys of one key set (an issuer's, or the agents' keys of a resource),
    refreshed in the background and on unknown kids. ``parse`` turns the source's bytes
    into keys; by default the issuer's JWS algorithms bind them (``parse_jwks``)."""

    def __init__(self, issuer: CacheSettings, source: KeySource, clock: Clock,
                 parse: Callable[[bytes], tuple[dict[str, Any], list[str]]] | None = None) -> None:
        self.issuer = issuer
        self.source = source
        self.clock = clock
        self.parse = parse or (lambda data: parse_jwks(data, issuer.algorithms))  # type: ignore[attr-defined]
        self.on_fetch: Callable[[bool], None] = lambda ok: None  # metrics hook: one call per fetch
        self.keys: dict[str, Any] = {}
        self.generation = 0  # bumps whenever the key set changes; cached tokens check it
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.last_error: str | None = None
        self.next_refresh = 0.0
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return bool(self.keys)

    def get(self, kid: str | None) -> Any:
        if kid is None:
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    async def get_or_refetch(self, kid: str | None) -> Any:
        """Look up ``kid``; when unknown, refetch once if the interval allows, then look again."""
        key = self.get(kid)
        if key is not None:
            return key
        if self._lock.locked():
            # A fetch is in flight (a rotation usually brings a burst of new kids): wait for it.
            async with self._lock:
                return self.get(kid)
        interval = self.issuer.jwks_refetch_interval_seconds
        if self.last_attempt is not None and self.clock.monotonic() - self.last_attempt < interval:
            return None
        async with self._lock:
            if self.last_attempt is None or self.clock.monotonic() - self.last_attempt >= interval:
                await self._refresh("unknown kid")
        return self.get(kid)

    async def refresh(self, why: str) -> bool:
        """Fetch the keys now; concurrent refreshes are serialised."""
        async with self._lock:
            return await self._refresh(why)

    async def _refresh(self, why: str) -> bool:
        self.last_attempt = self.clock.monotonic()
        try:
            data, announced = await self.source.fetch()
            keys, skipped = self.parse(data)
            if not keys:
                raise KeySourceError("JWKS holds no usable signing key" + (f" ({skipped[0]})" if skipped else ""))
        except Exception as exc:  # any failure (e.g. a malformed discovered jwks_uri) is stale-if-error
            self.last_error = (str(exc) if isinstance(exc, KeySourceError)
                               else f"{self.source.describe()}: unexpected {type(exc).__name__}")
            self.next_refresh = self.last_attempt + min(self.issuer.jwks_refetch_interval_seconds,
                                                        self.issuer.jwks_min_cache_seconds)
            log.warning("jwks refresh failed", extra={"issuer": self.issuer.id, "why": why, "error": self.last_error,
                                                      "serving_stale": bool(self.keys)})
            self.on_fetch(False)
            return False
        self.on_fetch(True)
        for note in skipped:
            log.warning("jwks key skipped", extra={"issuer": self.issuer.id, "detail": note})
        changed = _fingerprint(keys) != _fingerprint(self.keys)  # kid, alg or key material
        if changed:
            self.generation += 1
        self.keys = keys
        self.last_success, self.last_error = self.last_attempt, None
        self.next_refresh = self.last_attempt + self._lifetime(announced)
        log.log(logging.INFO if changed else logging.DEBUG, "jwks loaded",
                extra={"issuer": self.issuer.id, "why": why, "keys": len(keys), "changed": changed})
        return True

    def _lifetime(self, announced: int | None) -> float:
        if isinstance(self.source, FileKeySource):
            return float(self.issuer.jwks_refetch_interval_seconds)  # cheap to re-read; picks up rotation
        lifetime = self.issuer.jwks_max_cache_seconds if announced is None else announced
        return float(min(max(lifetime, self.issuer.jwks_min_cache_seconds), self.issuer.jwks_max_cache_seconds))

    async def run(self) -> None:
        """Background refresher: sleep until the keys are due, refresh, repeat."""
        while True:
            delay = max(self.next_refresh - self.clock.monotonic(), 0.05)
            await asyncio.sleep(delay)
            await self.refresh("scheduled")

    def status(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        return {
            "ready": self.ready,
            "keys": len(self.keys),
            "source": self.source.describe(),
            "age_seconds": None if self.last_success is None else round(now - self.last_success, 1),
            "last_error": self.last_error,
        }
