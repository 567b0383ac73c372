"""Issuer signing keys: loading a JWKS safely and keeping it fresh.

Keys are namespaced by issuer (a ``kid`` of issuer A never verifies a token of issuer
B) and each key is bound to exactly one algorithm when it is loaded, so the token's
``alg`` header can only ever confirm that binding, never choose it. The cache follows
Envoy's jwt_authn split: a *source* fetches bytes (file, URI, discovery), ``parse_jwks``
turns them into ``VerifierKey``s, ``IssuerKeys`` keeps the last good set, refreshes it
on ``Cache-Control: max-age`` (bounded by the issuer's min/max), refetches at most once
per interval when an unknown ``kid`` shows up, and keeps serving the last good keys when
a refresh fails (stale-if-error), recording the failure for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from enforcer.auth import strictjson
from enforcer.clock import Clock
from enforcer.policy.checks import is_loopback_host
from enforcer.policy.model import Issuer

log = logging.getLogger("enforcer.jwks")

MAX_JWKS_BYTES = 1024 * 1024
MAX_KEYS = 100
MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_CURVE_ALGORITHMS = {"P-256": {"ES256"}, "P-384": {"ES384"}, "P-521": {"ES512"}, "Ed25519": {"EdDSA", "Ed25519"}}
_RSA_ALGORITHMS = ("RS256", "PS256", "RS384", "PS384", "RS512", "PS512")
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)


class KeySourceError(Exception):
    """A JWKS could not be fetched or parsed; the message is safe to log."""


@dataclass(frozen=True)
class VerifierKey:
    kid: str
    alg: str
    key: Key


def parse_jwks(data: bytes, algorithms: tuple[str, ...]) -> tuple[dict[str, VerifierKey], list[str]]:
    """Usable keys by kid, and a note for each key that was skipped (and why)."""
    try:
        document = strictjson.loads(data, max_bytes=MAX_JWKS_BYTES)
    except strictjson.StrictJSONError as exc:
        raise KeySourceError(f"JWKS is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySourceError("JWKS must be an object with a 'keys' array")
    keys: dict[str, VerifierKey] = {}
    skipped: list[str] = []
    for index, jwk in enumerate(document["keys"][:MAX_KEYS]):
        try:
            key = _verifier_key(jwk, algorithms)
        except ValueError as exc:
            skipped.append(f"key {index}: {exc}")
            continue
        if key.kid in keys:
            skipped.append(f"key {index}: kid {key.kid[:40]!r} appears twice; the first one is kept")
            continue
        keys[key.kid] = key
    return keys, skipped


def _verifier_key(jwk: Any, algorithms: tuple[str, ...]) -> VerifierKey:
    if not isinstance(jwk, dict):
        raise ValueError("not an object")
    kid = jwk.get("kid", "")
    if not isinstance(kid, str) or len(kid) > 256:
        raise ValueError("kid must be a string of at most 256 characters")
    if jwk.get("use", "sig") != "sig":
        raise ValueError("use is not 'sig'")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise ValueError("contains private or symmetric key material; publish public keys only")
    alg = _bind_algorithm(jwk, algorithms)
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
        else:
            raise ValueError(f"unsupported kty {str(kty)[:16]!r}")
    except ValueError:
        raise
    except Exception as exc:  # joserfc raises several types for malformed members
        raise ValueError(f"malformed key ({type(exc).__name__})") from exc
    return VerifierKey(kid, alg, key)


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


def _fingerprint(keys: dict[str, VerifierKey]) -> dict[str, tuple[str, str]]:
    return {kid: (key.alg, key.key.thumbprint()) for kid, key in keys.items()}


class KeySource(Protocol):
    async def fetch(self) -> tuple[bytes, int | None]:
        """JWKS bytes and the max-age the source announced (None when it said nothing)."""
        ...

    def describe(self) -> str: ...


class FileKeySource:
    def __init__(self, path: str) -> None:
        self.path = path

    async def fetch(self) -> tuple[bytes, int | None]:
        try:
            size = os.path.getsize(self.path)
            if size > MAX_JWKS_BYTES:
                raise KeySourceError(f"{self.path} is larger than {MAX_JWKS_BYTES} bytes")
            with open(self.path, "rb") as handle:
                return handle.read(), None
        except OSError as exc:
            raise KeySourceError(f"cannot read {self.path}: {exc.strerror}") from exc

    def describe(self) -> str:
        return self.path


class UriKeySource:
    def __init__(self, uri: str, client: httpx.AsyncClient) -> None:
        self.uri = uri
        self.client = client

    async def fetch(self) -> tuple[bytes, int | None]:
        response = await get_capped(self.client, self.uri)
        return response.content, max_age(response.headers.get("cache-control"))

    def describe(self) -> str:
        return self.uri


class DiscoveryKeySource:
    """RFC 8414 metadata, then OpenID discovery; the document's ``issuer`` must match exactly."""

    def __init__(self, issuer: str, client: httpx.AsyncClient) -> None:
        self.issuer = issuer
        self.client = client
        self.jwks: UriKeySource | None = None

    def metadata_urls(self) -> list[str]:
        parts = urlsplit(self.issuer)
        path = parts.path.rstrip("/")
        origin = f"{parts.scheme}://{parts.netloc}"
        return [f"{origin}/.well-known/oauth-authorization-server{path}",
                f"{origin}{path}/.well-known/openid-configuration"]

    async def fetch(self) -> tuple[bytes, int | None]:
        if self.jwks is None:
            self.jwks = UriKeySource(await self._discover(), self.client)
        return await self.jwks.fetch()

    async def _discover(self) -> str:
        errors = []
        for url in self.metadata_urls():
            try:
                response = await get_capped(self.client, url)
                document = strictjson.loads(response.content, max_bytes=MAX_JWKS_BYTES)
            except (KeySourceError, strictjson.StrictJSONError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            if not isinstance(document, dict) or document.get("issuer") != self.issuer:
                errors.append(f"{url}: metadata issuer does not equal the configured issuer")
                continue
            jwks_uri = document.get("jwks_uri")
            parts = urlsplit(jwks_uri) if isinstance(jwks_uri, str) else None
            if parts is None or not (parts.scheme == "https" or is_loopback_host(parts.hostname)):
                errors.append(f"{url}: jwks_uri missing or not https")
                continue
            return str(jwks_uri)
        raise KeySourceError("discovery failed: " + "; ".join(errors))

    def describe(self) -> str:
        return f"discovery of {self.issuer}"


async def get_capped(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """GET with no redirects, status 200 required, body capped."""
    try:
        async with client.stream("GET", url, headers={"accept": "application/json"}) as response:
            if response.status_code != 200:
                raise KeySourceError(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise KeySourceError(f"{url} sent more than {MAX_JWKS_BYTES} bytes")
            response._content = bytes(body)
            return response
    except httpx.HTTPError as exc:
        raise KeySourceError(f"{url}: {type(exc).__name__}") from exc


def max_age(cache_control: str | None) -> int | None:
    """Seconds the JWKS may be cached; 0 for no-store/no-cache (then the issuer's minimum applies)."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None


def make_source(issuer: Issuer, client: httpx.AsyncClient) -> KeySource:
    if issuer.jwks_file is not None:
        return FileKeySource(issuer.jwks_file)
    if issuer.jwks_uri is not None:
        return UriKeySource(issuer.jwks_uri, client)
    return DiscoveryKeySource(issuer.issuer, client)


class IssuerKeys:
    """The current keys of one issuer, refreshed in the background and on unknown kids."""

    def __init__(self, issuer: Issuer, source: KeySource, clock: Clock) -> None:
        self.issuer = issuer
        self.source = source
        self.clock = clock
        self.keys: dict[str, VerifierKey] = {}
        self.generation = 0  # bumps whenever the key set changes; cached tokens check it
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.last_error: str | None = None
        self.next_refresh = 0.0
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return bool(self.keys)

    def get(self, kid: str | None) -> VerifierKey | None:
        if kid is None:
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    async def get_or_refetch(self, kid: str | None) -> VerifierKey | None:
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
            keys, skipped = parse_jwks(data, self.issuer.algorithms)
            if not keys:
                raise KeySourceError("JWKS holds no usable signing key" + (f" ({skipped[0]})" if skipped else ""))
        except Exception as exc:  # any failure (e.g. a malformed discovered jwks_uri) is stale-if-error
            self.last_error = (str(exc) if isinstance(exc, KeySourceError)
                               else f"{self.source.describe()}: unexpected {type(exc).__name__}")
            self.next_refresh = self.last_attempt + min(self.issuer.jwks_refetch_interval_seconds,
                                                        self.issuer.jwks_min_cache_seconds)
            log.warning("jwks refresh failed", extra={"issuer": self.issuer.id, "why": why, "error": self.last_error,
                                                      "serving_stale": bool(self.keys)})
            return False
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
