"""DPoP (RFC 9449): proof of possession for resources with ``dpop: required | allowed``.

A DPoP-bound access token carries ``cnf.jkt``, the RFC 7638 thumbprint of the client's key,
and travels as ``Authorization: DPoP <token>`` with a ``DPoP`` header: a JWT the client signs
for this one request. Right after the token verified, ``DPoPVerifier.verify`` checks the
proof as RFC 9449 section 4.3 lists, cheap and structural first, crypto after:

1. exactly one ``DPoP`` header, at most ``MAX_PROOF_BYTES``, a compact JWS of three canonical
   base64url segments (JSON serialization, padding and stray characters refused);
2. header (strict JSON, no duplicate members): ``typ`` ``dpop+jwt``; ``alg`` from the
   resource's ``dpop_options.algorithms`` (case-sensitive; asymmetric only, checked at load);
   ``jwk`` a public key of the type ``alg`` needs (no ``d``/``p``/``q``/``dp``/``dq``/``qi``/
   ``oth``/``k``, RSA of at least 2048 bits); no ``crit``, ``jku``, ``x5u``, ``x5c``;
3. joserfc verifies the signature with that key and only that algorithm;
4. claims (strict JSON): ``jti``, ``htm``, ``htu``, ``iat`` and ``ath`` present and typed;
   ``htm`` equals the method; ``htu`` equals the resource's *external* URI (``public_origin``,
   else the origin of ``resource``, plus the received path; query and fragment ignored; scheme,
   host, default port and percent-encoding normalised, RFC 3986 section 6.2.2/6.2.3), never
   anything derived from Host; ``iat`` within ``max_age_seconds`` (plus skew); ``ath`` the
   base64url SHA-256 of the access token;
5. the proof key's thumbprint equals the token's ``cnf.jkt`` (else ``invalid_token``);
6. with ``require_nonce``, the ``nonce`` is a current server nonce (else ``use_dpop_nonce``
   with a fresh one in ``DPoP-Nonce``);
7. only then is ``jti`` recorded in the replay store (memory, or Redis shared by replicas)
   for the whole acceptance window, keyed by resource, key thumbprint and ``jti``: garbage
   cannot burn a client's ``jti`` values, and a replay at another replica is refused too.

Server nonces are stateless: ``base64url(HMAC-SHA256(key, resource id, time window))``, the
window being ``max_age_seconds`` long; the current and the previous window are accepted, so a
nonce lasts between one and two windows. The key is random per process unless
``ENFORCER_DPOP_NONCE_KEY`` (at least 32 characters) gives one that every replica and worker
shares; without it a client that a load balancer moves to another process is simply asked for
that process's nonce.

A token with ``cnf.jkt`` sent as ``Bearer`` is refused in every mode (RFC 9449 section 7.2:
otherwise stealing a bound token would be enough to use it): here for ``required`` and
``allowed``, by ``check_bearer_binding`` for ``off`` (where only required request signatures
with ``keys.from_token_cnf`` prove possession of that key instead).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import SplitResult, urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import Key

from enforcer.auth import strictjson
from enforcer.auth.extract import access_token
from enforcer.auth.jwks import import_jwk
from enforcer.auth.replay import ReplayCache, ReplayCacheUnavailable
from enforcer.clock import Clock
from enforcer.context import Principal, RequestInfo
from enforcer.errors import DependencyUnavailable, DPoPInvalidToken, InvalidDPoPProof, InvalidToken, UseDPoPNonce
from enforcer.policy.model import Resource
from enforcer.routing import Route

log = logging.getLogger("enforcer.dpop")

MAX_PROOF_BYTES = 8192  # the DPoP header; an RSA-4096 proof is about 1.5 KB
MAX_JSON_BYTES = 4096  # each of the decoded header and payload
MAX_JTI_CHARS = 256
HEADER_CACHE_ENTRIES = 1024
NONCE_KEY_ENV = "ENFORCER_DPOP_NONCE_KEY"
MIN_NONCE_KEY_CHARS = 32

_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\Z")
_TYPES = frozenset({"dpop+jwt", "application/dpop+jwt"})
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_REFUSED_HEADERS = ("crit", "jku", "x5u", "x5c", "b64", "zip", "enc", "cty")
#: the key type (and curve) each proof algorithm needs
_KEY_TYPE = {"ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
             "EdDSA": ("OKP", "Ed25519"), "Ed25519": ("OKP", "Ed25519"),
             **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")}}
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: a percent-encoded unreserved character (RFC 3986 section 2.3): decoded when normalising
_ENCODED = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

_DOWNGRADE = ("the token is bound to a DPoP key (cnf.jkt): send it as Authorization: DPoP <token> with a DPoP "
              "proof, never as Bearer")


@dataclass(frozen=True)
class VerifiedProof:
    """What was learned from an accepted proof: the key (thumbprint) and its algorithm."""

    jkt: str
    alg: str


@dataclass(frozen=True)
class _ProofHeader:
    """A proof header that passed every check, with its key imported (cached by its segment:
    a client sends the same header with every proof)."""

    alg: str
    key: Key
    thumbprint: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def access_token_hash(token: str) -> str:
    """``ath`` (RFC 9449 section 4.2): base64url of the SHA-256 of the token's ASCII bytes."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


# -- URIs -------------------------------------------------------------------------------------


def normalized_path(path: bytes) -> str:
    """A path with RFC 3986 section 6.2.2 normalisation: percent-encoded unreserved characters
    decoded, other escapes in upper case, bytes outside printable ASCII percent-encoded."""
    decoded = _ENCODED.sub(lambda m: (bytes([int(m.group(1), 16)]) if int(m.group(1), 16) in _UNRESERVED
                                      else b"%" + m.group(1).upper()), path) if b"%" in path else path
    if decoded.isascii() and not any(b <= 0x20 or b == 0x7F for b in decoded):
        text = decoded.decode("ascii")
    else:
        text = "".join(chr(b) if 0x20 < b < 0x7F else f"%{b:02X}" for b in decoded)
    return text or "/"


def normalized_uri(uri: str) -> str | None:
    """``scheme://host[:port]/path`` of an http(s) URI, without query and fragment, with scheme
    and host in lower case, the default port dropped and the path normalised; None for
    anything else (another scheme, userinfo, no host, a bad port)."""
    try:
        parts: SplitResult = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        authority += f":{port}"
    return f"{scheme}://{authority}{normalized_path(parts.path.encode('utf-8'))}"


# -- server nonces ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def process_nonce_key() -> bytes:
    """The nonce key of this process: from ``ENFORCER_DPOP_NONCE_KEY`` when it is long enough
    (shared by replicas and workers), else random."""
    configured = os.environ.get(NONCE_KEY_ENV, "")
    if len(configured) >= MIN_NONCE_KEY_CHARS:
        return hashlib.sha256(b"enforcer dpop nonce\x00" + configured.encode("utf-8")).digest()
    if configured:
        log.error(f"{NONCE_KEY_ENV} is shorter than {MIN_NONCE_KEY_CHARS} characters and is ignored; "
                  "DPoP nonces use a random key of this process")
    return os.urandom(32)


class NonceIssuer:
    """Stateless DPoP nonces of one resource (see the module docstring)."""

    def __init__(self, key: bytes, clock: Clock, resource_id: str, window_seconds: int) -> None:
        self.key, self.clock, self.window = key, clock, window_seconds
        self.resource = resource_id.encode("utf-8")

    def _nonce(self, window: int) -> str:
        message = self.resource + b"\x00" + str(window).encode("ascii")
        return b64url(hmac.new(self.key, message, hashlib.sha256).digest()[:24])

    def current(self) -> str:
        return self._nonce(int(self.clock.time() // self.window))

    def valid(self, nonce: Any) -> bool:
        """Whether ``nonce`` is this window's or the previous window's nonce."""
        if not isinstance(nonce, str) or len(nonce) != 32:
            return False
        window = int(self.clock.time() // self.window)
        return any(hmac.compare_digest(nonce, self._nonce(w)) for w in (window, window - 1))


# -- the verifier -----------------------------------------------------------------------------


class DPoPVerifier:
    """The ``dpop`` settings of one resource, ready to check requests."""

    def __init__(self, resource: Resource, replay: ReplayCache, clock: Clock, *,
                 nonce_key: bytes | None = None) -> None:
        options = resource.dpop_options
        self.mode = resource.dpop
        self.resource_id = resource.id
        self.options = options
        self.algorithms = frozenset(options.algorithms)
        self.replay, self.clock = replay, clock
        route = Route.for_resource(resource)
        origin = normalized_uri(f"{route.public_scheme}://{route.public_host}/")
        if origin is None:  # policy checks refuse such an origin; never compare against nothing
            raise ValueError(f"resource {resource.id}: no usable public origin for DPoP htu")
        self.origin = origin[:-1]
        #: a proof is acceptable for at most this long (iat from now - max_age - skew to now + skew)
        self.replay_seconds = options.max_age_seconds + 2 * options.clock_skew_seconds
        self.nonces = (NonceIssuer(nonce_key or process_nonce_key(), clock, resource.id, options.max_age_seconds)
                       if options.require_nonce else None)
        self._headers: OrderedDict[str, _ProofHeader] = OrderedDict()
        # joserfc caps headers at 512 bytes, too small for an RSA jwk; ours are capped above. The
        # header members that matter were checked already, so joserfc does not refuse unknown ones.
        self._registry = jws.JWSRegistry(algorithms=list(options.algorithms), strict_check_header=False)
        self._registry.max_header_length = MAX_PROOF_BYTES

    def credentials(self, request: RequestInfo) -> tuple[str, bool]:
        """The access token, and whether it came with the ``DPoP`` scheme (``extract.access_token``)."""
        return access_token(request, self.mode)

    async def verify(self, request: RequestInfo, token: str, bound: bool, principal: Principal) -> VerifiedProof | None:
        """The accepted proof of a ``DPoP`` request; None for a ``Bearer`` request with an unbound
        token (``allowed``). Raises ``DPoPInvalidToken``, ``InvalidDPoPProof``, ``UseDPoPNonce``
        or ``DependencyUnavailable``."""
        jkt = principal.cnf.get("jkt") if principal.cnf is not None else None
        if not bound:
            if jkt is not None:
                raise DPoPInvalidToken(_DOWNGRADE)
            return None
        if jkt is None:
            raise DPoPInvalidToken("the token is not DPoP-bound (it has no cnf.jkt); request a DPoP-bound token"
                                   + (" or send this one as Bearer" if self.mode == "allowed" else ""))
        proof = _proof_value(request)
        header = self._header(proof)
        claims = self._verified_claims(proof, header)
        self._check_claims(request, claims, token)
        if not hmac.compare_digest(header.thumbprint, jkt):
            raise DPoPInvalidToken("the DPoP proof is not signed by the key the token is bound to (cnf.jkt)")
        if self.nonces is not None:
            self._check_nonce(claims.get("nonce"))
        await self._record(header.thumbprint, claims["jti"])
        return VerifiedProof(header.thumbprint, header.alg)

    # -- 2. header and key ----------------------------------------------------------------------

    def _header(self, proof: str) -> _ProofHeader:
        segment = proof.partition(".")[0]
        cached = self._headers.get(segment)
        if cached is not None:
            self._headers.move_to_end(segment)
            return cached
        header = _json_segment(segment, "header")
        typ, alg = header.get("typ"), header.get("alg")
        if not isinstance(typ, str) or typ.lower() not in _TYPES:
            raise _refusal("wrong_typ", "the DPoP proof's typ header must be dpop+jwt")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _refusal("algorithm_not_allowed", "the DPoP proof's alg is not accepted here; use one of "
                           + " ".join(self.options.algorithms))
        for name in _REFUSED_HEADERS:
            if name in header:
                raise _refusal("malformed_proof", f"the DPoP proof has a {name} header, which is not accepted")
        key, thumbprint = _proof_key(header.get("jwk"), alg)
        checked = _ProofHeader(alg, key, thumbprint)
        self._headers[segment] = checked
        if len(self._headers) > HEADER_CACHE_ENTRIES:
            self._headers.popitem(last=False)
        return checked

    # -- 3. signature, 4. claims ---------------------------------------------------------------

    def _verified_claims(self, proof: str, header: _ProofHeader) -> dict[str, Any]:
        signature = proof.rpartition(".")[2]
        if len(signature) % 4 == 1 or b64url(_b64decode(signature)) != signature:
            raise _refusal("malformed_proof", "the DPoP proof's signature is not canonical base64url")
        try:
            jws.deserialize_compact(proof, header.key, algorithms=[header.alg], registry=self._registry)
        except (JoseError, ValueError, TypeError) as exc:
            raise _refusal("bad_signature", "the DPoP proof's signature does not verify with its jwk") from exc
        return _json_segment(proof.split(".")[1], "payload")

    def _check_claims(self, request: RequestInfo, claims: dict[str, Any], token: str) -> None:
        for name in ("jti", "htm", "htu", "ath"):
            value = claims.get(name)
            if not isinstance(value, str) or not value:
                raise _refusal("missing_claim", f"the DPoP proof must carry {name} as a non-empty string")
        if len(claims["jti"]) > MAX_JTI_CHARS:
            raise _refusal("malformed_proof", f"the DPoP proof's jti is longer than {MAX_JTI_CHARS} characters")
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or isinstance(iat, bool) or not math.isfinite(iat):
            raise _refusal("missing_claim", "the DPoP proof must carry iat as a NumericDate")
        if claims["htm"] != request.method:
            raise _refusal("method_mismatch", "the DPoP proof's htm is not this request's method")
        if normalized_uri(claims["htu"]) != self.origin + normalized_path(request.raw_path):
            raise _refusal("uri_mismatch", f"the DPoP proof's htu is not this request's URI "
                           f"{self.origin}<path> (query and fragment are ignored)")
        now, skew = self.clock.time(), self.options.clock_skew_seconds
        if iat > now + skew:
            raise _refusal("issued_in_future", "the DPoP proof's iat is in the future; check the clock")
        if iat < now - self.options.max_age_seconds - skew:
            raise _refusal("too_old", f"the DPoP proof is older than {self.options.max_age_seconds} seconds; "
                           "make a new proof for each request")
        if not hmac.compare_digest(claims["ath"].encode("utf-8"), access_token_hash(token).encode("ascii")):
            raise _refusal("token_hash_mismatch", "the DPoP proof's ath is not the hash of this access token")

    # -- 6. nonce, 7. replay ------------------------------------------------------------------

    def _check_nonce(self, nonce: Any) -> None:
        assert self.nonces is not None
        if not self.nonces.valid(nonce):
            what = "needs" if nonce is None else "has an expired or unknown"
            raise UseDPoPNonce(f"the DPoP proof {what} server nonce: make a new proof with the nonce in the "
                               "DPoP-Nonce header", nonce=self.nonces.current())

    async def _record(self, thumbprint: str, jti: str) -> None:
        try:
            fresh = await self.replay.first_use(("dpop", self.resource_id, thumbprint, jti), self.replay_seconds)
        except ReplayCacheUnavailable as exc:
            raise DependencyUnavailable(f"{exc}; DPoP requests are refused until it is back") from exc
        if not fresh:
            raise _refusal("replayed_proof", "this DPoP proof (jti) was already used; make a new proof for each "
                           "request")


def dpop_token_error(error: InvalidToken) -> DPoPInvalidToken:
    """A token refusal for a request sent with the DPoP scheme: the same words, DPoP challenge."""
    return error if isinstance(error, DPoPInvalidToken) else DPoPInvalidToken(error.description)


def check_bearer_binding(principal: Principal, resource: Resource) -> None:
    """``dpop: off``: a token bound to a DPoP key (``cnf.jkt``) sent as Bearer is refused
    (``InvalidToken``, Bearer challenge: this resource offers no DPoP) unless required request
    signatures take their key from the token (``keys.from_token_cnf``), which proves possession
    of that key on every request. Called only for tokens that have a ``cnf`` claim."""
    cnf = principal.cnf
    if cnf is None or "jkt" not in cnf:
        return
    signatures = resource.signatures
    if signatures is not None and signatures.required and signatures.keys.from_token_cnf:
        return
    raise InvalidToken("the token is bound to a DPoP key (cnf.jkt) and this resource does not accept DPoP; "
                       "request a token that is not DPoP-bound")


# -- helpers ----------------------------------------------------------------------------------


def _refusal(failure: str, description: str) -> InvalidDPoPProof:
    return InvalidDPoPProof(description[:300], failure=failure)


def _proof_value(request: RequestInfo) -> str:
    values = request.header_values(b"dpop")
    if not values:
        raise _refusal("missing_proof", "send a DPoP header with a proof for this request")
    if len(values) > 1:
        raise _refusal("multiple_proofs", "send exactly one DPoP header")
    value = values[0].strip()
    if len(value) > MAX_PROOF_BYTES:
        raise _refusal("malformed_proof", f"the DPoP proof is larger than {MAX_PROOF_BYTES} bytes")
    if not value.isascii() or not _COMPACT.match(proof := value.decode("ascii")):
        raise _refusal("malformed_proof", "the DPoP proof is not a compact JWS (three base64url segments)")
    return proof


def _json_segment(segment: str, name: str) -> dict[str, Any]:
    try:
        return strictjson.jws_segment(segment, MAX_JSON_BYTES)
    except strictjson.StrictJSONError as exc:
        raise _refusal("malformed_proof", f"the DPoP proof's {name} {exc}") from exc


def _proof_key(jwk: Any, alg: str) -> tuple[Key, str]:
    """The public key of a proof's ``jwk`` header, fit for ``alg``, and its RFC 7638 thumbprint."""
    if not isinstance(jwk, dict):
        raise _refusal("invalid_key", "the DPoP proof must carry its public key in a jwk header")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise _refusal("invalid_key", "the DPoP proof's jwk contains private key material; send the public key only")
    kty, crv = _KEY_TYPE[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise _refusal("invalid_key", f"the DPoP proof's jwk is not a key for {alg}")
    try:
        key = import_jwk(jwk)
    except ValueError as exc:
        raise _refusal("invalid_key", f"the DPoP proof's jwk is not usable: {exc}") from exc
    return key, key.thumbprint()
