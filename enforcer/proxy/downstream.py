"""The upstream's own token: RFC 8693 token exchange (``downstream_token``; MCP: no token passthrough).

For a resource with ``downstream_token`` the enforcer acts as an OAuth client: it sends the
verified inbound token as ``subject_token`` (type ``access_token``) to the authorization
server's token endpoint, authenticated as its own client (``client_secret_basic`` or an RFC 7523
``private_key_jwt`` assertion), asking for ``audience`` / ``resource`` and the configured scopes
that the inbound token holds. The answer's ``access_token`` becomes the upstream's
``Authorization: Bearer``; the inbound token never reaches the upstream.

Scope never widens. The exchanged token is refused (502 ``token_exchange_failed``, nothing
forwarded) when the scope it carries has anything the inbound token lacks, or anything that was not
asked for. What it carries is the response's ``scope`` (absent: what was asked, RFC 6749 section
5.1) and, when the token is a JWS whose payload is readable JSON, its ``scope`` claim as well. That
claim is read *without* verifying the signature: the enforcer is not the token's audience and holds
no key for it, and an unverified claim is only ever used to refuse, never to accept, so a forged
one can cost a request but cannot widen anything. An opaque token is judged by the response alone.

Cache. An exchanged token is kept per (SHA-256 of the inbound token, audience, resource) until
``EXPIRY_MARGIN_SECONDS`` before the earliest of: the response's ``expires_in``, the exchanged
JWT's ``exp`` when readable, and the inbound token's ``exp`` (with none of the first two,
``UNKNOWN_LIFETIME_SECONDS``). At most ``CACHE_ENTRIES`` tokens are kept (least recently used go
first). Concurrent requests with the same inbound token share one exchange (single flight). A
failed exchange is not cached: the next request tries again.

Failures (the token endpoint unreachable, slow, not 200, not JSON, no usable token, a wider scope)
are ``TokenExchangeFailed``: 502, reason ``token_exchange_failed``, a description that says which,
and never the caller's token sent on instead. Logs name the resource and the inbound token's short
hash, never a token, a secret or an assertion.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from enforcer.auth import strictjson
from enforcer.auth.tokens import token_hash
from enforcer.clock import Clock
from enforcer.context import Principal, RequestInfo
from enforcer.errors import TokenExchangeFailed
from enforcer.policy.model import ASYMMETRIC_ALGORITHMS, DownstreamToken

log = logging.getLogger("enforcer.downstream")

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EXPIRY_MARGIN_SECONDS = 30
UNKNOWN_LIFETIME_SECONDS = 60  # cache time of a token whose lifetime the enforcer cannot tell
CACHE_ENTRIES = 10_000
ASSERTION_LIFETIME_SECONDS = 60
MAX_RESPONSE_BYTES = 64 * 1024
MAX_SECRET_BYTES = 4096
MAX_KEY_BYTES = 64 * 1024
#: what may follow "Bearer " in a header (RFC 6750 b64token): anything else could inject a header
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+\Z")
#: the JWS algorithm of a private key without ``alg``, by key type and curve
_DEFAULT_ALGORITHMS = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("EC", "P-521"): "ES512",
                       ("RSA", None): "RS256", ("OKP", "Ed25519"): "Ed25519"}


class ClientCredentialError(Exception):
    """A client secret or private key file that cannot be used; the message names the file, never its content."""


@dataclass(frozen=True)
class SigningKey:
    key: Key
    alg: str
    kid: str | None


@dataclass(frozen=True)
class Exchanged:
    token: str
    cache_until: float  # wall-clock time; not reused from then on


def read_secret(path: str) -> str:
    """The client secret in ``path`` (surrounding whitespace removed)."""
    data = _read_file(path, MAX_SECRET_BYTES, "client secret")
    try:
        secret = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ClientCredentialError(f"{path}: the client secret is not UTF-8 text") from None
    if not secret:
        raise ClientCredentialError(f"{path}: the client secret file is empty")
    return secret


def read_private_key(path: str) -> SigningKey:
    """The private JWK in ``path``, checked to sign with its algorithm (``alg``, else one by key type)."""
    try:
        document = strictjson.loads(_read_file(path, MAX_KEY_BYTES, "private key"), max_bytes=MAX_KEY_BYTES)
    except strictjson.StrictJSONError as exc:
        raise ClientCredentialError(f"{path}: the private key is not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("kty") not in ("EC", "RSA", "OKP"):
        raise ClientCredentialError(f"{path}: expected one private JWK with kty EC, RSA or OKP")
    if "d" not in document:
        raise ClientCredentialError(f"{path}: the JWK has no private part (d)")
    kty, crv = document["kty"], document.get("crv")
    alg = document.get("alg") or _DEFAULT_ALGORITHMS.get((kty, None if kty == "RSA" else crv))
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise ClientCredentialError(f"{path}: no asymmetric JWS algorithm for this key (give alg)")
    kid = document.get("kid")
    try:
        key = JWKRegistry.import_key(document)
        jwt.encode({"alg": alg}, {"probe": True}, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError) as exc:
        raise ClientCredentialError(f"{path}: the key cannot sign {alg} ({type(exc).__name__})") from None
    return SigningKey(key, alg, kid if isinstance(kid, str) else None)


def _read_file(path: str, limit: int, what: str) -> bytes:
    try:
        if os.path.getsize(path) > limit:
            raise ClientCredentialError(f"{path}: the {what} file is larger than {limit} bytes")
        with open(path, "rb") as handle:
            return handle.read(limit + 1)
    except OSError as exc:
        raise ClientCredentialError(f"cannot read the {what} file {path}: {exc.strerror}") from None


@lru_cache(maxsize=64)
def _cached_private_key(path: str, mtime_ns: int, size: int) -> SigningKey:
    return read_private_key(path)


def inbound_token(request: RequestInfo, principal: Principal) -> str:
    """The credential of the request's one ``Authorization`` header (after its scheme), which the
    pipeline verified: its hash must be the verified token's, or nothing is exchanged."""
    values = request.header_values(b"authorization")
    token = values[0].decode("latin-1").strip().partition(" ")[2].strip() if len(values) == 1 else ""
    if not token or not token.isascii() or token_hash(token) != principal.token_hash:
        raise TokenExchangeFailed("the verified access token could not be read back for the token exchange")
    return token


class TokenExchanger:
    """Exchanges inbound tokens for one resource's upstream, with a cache and single flight."""

    def __init__(self, resource_id: str, config: DownstreamToken, http: httpx.AsyncClient, clock: Clock) -> None:
        self.resource_id = resource_id
        self.config = config
        self.http = http
        self.clock = clock
        self.scopes = tuple(config.scope.split()) if config.scope is not None else None
        self._token_endpoint = config.token_endpoint
        self._cache: OrderedDict[tuple[bytes, str | None, str | None], Exchanged] = OrderedDict()
        self._inflight: dict[tuple[bytes, str | None, str | None], asyncio.Task[Exchanged]] = {}
        self.exchanges = 0  # token requests sent (tests and debugging)

    async def token_for(self, inbound: str, principal: Principal) -> str:
        """The downstream token for ``inbound`` (verified, of ``principal``), or ``TokenExchangeFailed``."""
        key = (hashlib.sha256(inbound.encode("latin-1")).digest(), self.config.audience, self.config.resource)
        cached = self._cache.get(key)
        if cached is not None:
            if cached.cache_until > self.clock.time():
                self._cache.move_to_end(key)
                return cached.token
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._exchange_and_keep(key, inbound, principal))
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        # a caller that goes away does not cancel the exchange the others wait for
        return (await asyncio.shield(task)).token

    async def _exchange_and_keep(self, key: tuple[bytes, str | None, str | None], inbound: str,
                                 principal: Principal) -> Exchanged:
        try:
            exchanged = await self._exchange(inbound, principal)
            if exchanged.cache_until > self.clock.time():
                self._cache[key] = exchanged
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
            return exchanged
        except TokenExchangeFailed as failure:
            log.warning("token exchange failed", extra={"resource": self.resource_id, "token_hash":
                                                        principal.token_hash, "detail": failure.description})
            raise
        finally:
            self._inflight.pop(key, None)

    async def _exchange(self, inbound: str, principal: Principal) -> Exchanged:
        asked = self._asked_scopes(principal)
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                endpoint = await self._endpoint()
                headers, form = self._client_authentication(endpoint)
                form.update(self._grant(inbound, asked))
                self.exchanges += 1
                status, body = await self._fetch("POST", endpoint, headers=headers, data=form)
        except TimeoutError:
            raise TokenExchangeFailed(f"token exchange failed: the authorization server did not answer within "
                                      f"{self.config.timeout_seconds:g} s") from None
        if status != 200:
            raise TokenExchangeFailed(f"token exchange failed: the authorization server refused it (HTTP {status}"
                                      f"{_oauth_error(body)})")
        return self._accept(body, asked, principal)

    def _asked_scopes(self, principal: Principal) -> tuple[str, ...] | None:
        """The configured scopes the inbound token holds (None: no ``scope`` is sent)."""
        if self.scopes is None:
            return None
        asked = tuple(scope for scope in self.scopes if scope in principal.scopes)
        if not asked:
            raise TokenExchangeFailed("token exchange failed: the access token holds none of the scopes the "
                                      f"upstream's token needs ({' '.join(self.scopes)})")
        return asked

    def _grant(self, inbound: str, asked: tuple[str, ...] | None) -> dict[str, str]:
        form = {"grant_type": GRANT_TYPE, "subject_token": inbound, "subject_token_type": ACCESS_TOKEN_TYPE,
                "requested_token_type": ACCESS_TOKEN_TYPE}
        if self.config.audience is not None:
            form["audience"] = self.config.audience
        if self.config.resource is not None:
            form["resource"] = self.config.resource
        if asked is not None:
            form["scope"] = " ".join(asked)
        return form

    def _client_authentication(self, endpoint: str) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and form fields that authenticate the enforcer as ``client_id``."""
        config = self.config
        try:
            if config.client_auth == "client_secret_basic":
                assert config.client_secret_file is not None
                # RFC 6749 section 2.3.1: both parts form-encoded before Basic
                pair = f"{quote(config.client_id, safe='')}:{quote(read_secret(config.client_secret_file), safe='')}"
                return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}, {}
            assert config.private_key_file is not None
            stat = os.stat(config.private_key_file)
            key = _cached_private_key(config.private_key_file, stat.st_mtime_ns, stat.st_size)
        except (ClientCredentialError, OSError) as exc:
            log.error("token exchange client credentials unusable", extra={"resource": self.resource_id,
                                                                           "detail": str(exc)})
            raise TokenExchangeFailed("token exchange failed: the enforcer's client credentials for the "
                                      "authorization server cannot be read") from None
        return {}, {"client_id": config.client_id, "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": self._assertion(key, endpoint)}

    def _assertion(self, key: SigningKey, endpoint: str) -> str:
        """RFC 7523 section 3: iss = sub = client_id, aud = the issuer (when discovered) or the
        token endpoint, a short lifetime and a fresh ``jti``."""
        now = int(self.clock.time())
        claims = {"iss": self.config.client_id, "sub": self.config.client_id,
                  "aud": self.config.issuer or endpoint, "iat": now, "exp": now + ASSERTION_LIFETIME_SECONDS,
                  "jti": secrets.token_urlsafe(24)}
        header = {"alg": key.alg, "typ": "JWT"} | ({"kid": key.kid} if key.kid else {})
        return jwt.encode(header, claims, key.key, algorithms=[key.alg])

    async def _endpoint(self) -> str:
        """The token endpoint: configured, or found once by discovery from ``issuer``."""
        if self._token_endpoint is None:
            assert self.config.issuer is not None
            self._token_endpoint = await self._discover(self.config.issuer)
        return self._token_endpoint

    async def _discover(self, issuer: str) -> str:
        """RFC 8414 metadata, then OpenID discovery; ``issuer`` must match exactly and the
        ``token_endpoint`` be https (or on a loopback host)."""
        from enforcer.policy.checks import is_loopback_host  # checks imports this module

        parts = urlsplit(issuer)
        path, origin = parts.path.rstrip("/"), f"{parts.scheme}://{parts.netloc}"
        for url in (f"{origin}/.well-known/oauth-authorization-server{path}",
                    f"{origin}{path}/.well-known/openid-configuration"):
            status, document = await self._fetch("GET", url)
            if status != 200 or not isinstance(document, dict) or document.get("issuer") != issuer:
                continue
            endpoint = document.get("token_endpoint")
            where = urlsplit(endpoint) if isinstance(endpoint, str) else None
            if where is not None and (where.scheme == "https" or
                                      (where.scheme == "http" and is_loopback_host(where.hostname))):
                return str(endpoint)
        raise TokenExchangeFailed("token exchange failed: the authorization server's metadata names no usable "
                                  "token_endpoint for this issuer")

    async def _fetch(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """Status and parsed JSON body (None when it is not JSON), the body capped; no redirects."""
        try:
            async with self.http.stream(method, url, headers={"accept": "application/json",
                                                              **kwargs.pop("headers", {})},
                                        timeout=self.config.timeout_seconds, follow_redirects=False,
                                        **kwargs) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise TokenExchangeFailed("token exchange failed: the authorization server's answer "
                                                  f"is larger than {MAX_RESPONSE_BYTES} bytes")
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise TokenExchangeFailed("token exchange failed: the authorization server could not be reached "
                                      f"({type(exc).__name__})") from None
        try:
            return response.status_code, strictjson.loads(bytes(body), max_bytes=MAX_RESPONSE_BYTES)
        except strictjson.StrictJSONError:
            return response.status_code, None

    def _accept(self, body: Any, asked: tuple[str, ...] | None, principal: Principal) -> Exchanged:
        """Check the token response (RFC 8693 section 2.2.1) and work out how long to keep its token."""
        if not isinstance(body, dict):
            raise TokenExchangeFailed("token exchange failed: the authorization server's answer is not a JSON "
                                      "object")
        token, token_type = body.get("access_token"), body.get("token_type")
        issued, expires_in, scope = body.get("issued_token_type"), body.get("expires_in"), body.get("scope")
        if not isinstance(token, str) or not _B64TOKEN.match(token):
            raise TokenExchangeFailed("token exchange failed: the answer holds no usable access_token")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenExchangeFailed("token exchange failed: the issued token is not a Bearer token")
        if issued is not None and issued not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
            raise TokenExchangeFailed("token exchange failed: the issued token is not an access token")
        if expires_in is not None and (type(expires_in) is not int or expires_in <= 0):
            raise TokenExchangeFailed("token exchange failed: expires_in is not a positive integer")
        if scope is not None and (not isinstance(scope, str) or not all(map(_SCOPE_TOKEN.match, scope.split()))):
            raise TokenExchangeFailed("token exchange failed: scope is not a list of scope tokens")
        claims = unverified_claims(token)
        self._check_scope(scope.split() if scope is not None else (asked or ()), asked, principal)
        claimed = claims.get("scope")
        if claimed is not None:
            if not isinstance(claimed, str):
                raise TokenExchangeFailed("token exchange failed: the issued token's scope claim is not a string")
            self._check_scope(claimed.split(), asked, principal)
        return Exchanged(token, self._cache_until(expires_in, claims.get("exp"), principal.exp))

    @staticmethod
    def _check_scope(granted: Any, asked: tuple[str, ...] | None, principal: Principal) -> None:
        """Every granted scope must be held by the inbound token and, when scopes were asked for, asked for."""
        allowed = principal.scopes if asked is None else principal.scopes & set(asked)
        wider = sorted(set(granted) - allowed)
        if wider:
            raise TokenExchangeFailed("token exchange failed: the issued token carries scope beyond the access "
                                      f"token's ({' '.join(wider)}); it is not used")

    def _cache_until(self, expires_in: int | None, exp: Any, inbound_exp: int) -> float:
        now = self.clock.time()
        ends = [float(inbound_exp)]
        if expires_in is not None:
            ends.append(now + expires_in)
        if type(exp) in (int, float):
            ends.append(float(exp))
        if len(ends) == 1:
            ends.append(now + UNKNOWN_LIFETIME_SECONDS + EXPIRY_MARGIN_SECONDS)
        return min(ends) - EXPIRY_MARGIN_SECONDS


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, read without verifying (only ever used to refuse); {} otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = strictjson.loads(payload, max_bytes=MAX_RESPONSE_BYTES)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _oauth_error(body: Any) -> str:
    """``, error=<code>`` when the answer is an RFC 6749 error with a well-formed code."""
    code = body.get("error") if isinstance(body, dict) else None
    return f", error={code}" if isinstance(code, str) and re.fullmatch(r"[a-z0-9_]{1,64}", code) else ""


def _retrieve(task: asyncio.Task[Exchanged]) -> None:
    """Mark a shared exchange's failure as seen even when every waiter went away."""
    if not task.cancelled():
        task.exception()
