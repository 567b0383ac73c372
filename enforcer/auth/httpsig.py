"""Stage 6: RFC 9421 request signatures, verified in the order of RFC 9421 section 3.2.

1. ``Signature-Input`` and ``Signature`` parse as strict structured dictionaries (a
   malformed field, a repeated label or a member of the wrong type rejects the request);
2. candidate signatures are chosen by policy, not by label: the configured ``tag``,
   then coverage of every required component (``content-digest`` only when a body is
   sent); labels carry no meaning;
3. each candidate's parameters are checked (``created`` required and within
   ``max_age_seconds`` plus skew, ``expires`` not passed, ``nonce`` present when
   required, ``alg`` equal to the key's algorithm);
4. the key comes from the resource's keyring (``keys.py``), ``keyid`` being only a
   lookup key; the base is rebuilt from the request as received, with ``@authority``,
   ``@scheme`` and ``@target-uri`` from ``public_origin``; the key verifies it;
5. a covered ``content-digest`` is recomputed over the body that will be forwarded;
6. only then is the nonce recorded, so garbage cannot burn an agent's nonces.

The first candidate that passes is the request's signature; when none does, the error
says what the most promising one lacked, and ``Accept-Signature`` says what to sign.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import NamedTuple

from enforcer.auth import structured
from enforcer.auth.digest import DigestError, check_content_digest
from enforcer.auth.keys import KeyNotFound, SignatureKey, SignatureKeyring
from enforcer.auth.replay import ReplayCache, ReplayCacheUnavailable
from enforcer.auth.sigbase import (
    SignatureBaseError,
    SignedMessage,
    component_identifier,
    normalize_authority,
    signature_base,
)
from enforcer.auth.structured import InnerList, Item, StructuredFieldError
from enforcer.clock import Clock
from enforcer.context import Principal, RequestInfo
from enforcer.errors import DependencyUnavailable, InvalidDigest, InvalidRequest, InvalidSignature
from enforcer.policy.model import Signatures

MAX_SIGNATURES = 8  # members per field; more is refused rather than verified one by one
MAX_FIELD_BYTES = 8192
BodyReader = Callable[[], Awaitable[bytes]]
_STRING_PARAMS = ("alg", "keyid", "nonce", "tag")


class VerifiedSignature(NamedTuple):
    """What the audit trail records about the signature that was accepted."""

    label: str
    keyid: str | None
    key_thumbprint: str
    alg: str
    covered: tuple[str, ...]
    created: int
    nonce: str | None
    tag: str | None


class _Candidate(NamedTuple):
    label: str
    covered: InnerList
    signature: bytes
    identifiers: tuple[str, ...]  # serialized once: used for selection, the base and the audit record

    def param(self, name: str) -> object:
        return self.covered.params.get(name)


class _RequestFields(Mapping[str, list[str]]):
    """The request's header lines as the signature base reads them, decoded on demand."""

    __slots__ = ("request",)

    def __init__(self, request: RequestInfo) -> None:
        self.request = request

    def __getitem__(self, name: str) -> list[str]:
        lines = self.get(name)
        if lines is None:
            raise KeyError(name)
        return lines

    def get(self, name: str, default: list[str] | None = None) -> list[str] | None:  # type: ignore[override]
        lines = self.request.header_values(name.encode("latin-1"))
        return [line.decode("latin-1") for line in lines] if lines else default

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name.decode("latin-1") for name, _ in self.request.headers))

    def __len__(self) -> int:
        return len(set(name for name, _ in self.request.headers))


class _Rejected(Exception):
    def __init__(self, failure: str, description: str) -> None:
        super().__init__(description)
        self.failure = failure
        self.description = description


class SignatureVerifier:
    """The ``signatures:`` block of one resource, ready to check requests."""

    def __init__(self, config: Signatures, keyring: SignatureKeyring, replay: ReplayCache, clock: Clock,
                 *, resource_id: str, public_scheme: str, public_host: str) -> None:
        self.config = config
        self.keyring = keyring
        self.replay = replay
        self.clock = clock
        self.resource_id = resource_id
        self.scheme = public_scheme.lower()
        self.authority = normalize_authority(self.scheme, public_host)
        self._required = tuple(f'"{name}"' for name in config.components)

    async def verify(self, request: RequestInfo, principal: Principal, has_body: bool,
                     read_body: BodyReader) -> VerifiedSignature | None:
        """The accepted signature, None for an unsigned request where signatures are optional,
        or a raised ``InvalidSignature`` / ``InvalidDigest`` / ``DependencyUnavailable``."""
        candidates = self._candidates(request)
        if candidates is None:
            if self.config.required:
                raise self._error("missing_signature", "this resource requires an RFC 9421 request signature "
                                  "(Signature and Signature-Input headers)")
            return None
        eligible, first_problem = self._eligible(candidates, has_body)
        if not eligible:
            raise self._error(*first_problem)
        message = self._message(request)
        problem = first_problem
        for candidate in eligible:
            try:
                accepted = await self._try(candidate, message, principal)
            except _Rejected as rejected:
                problem = (rejected.failure, rejected.description)
                continue
            if any(item.value == "content-digest" for item in candidate.covered.items):
                await self._check_digest(request, await read_body())
            await self._record_nonce(accepted)
            return accepted
        raise self._error(*problem)

    # -- 1. parsing ---------------------------------------------------------------------

    def _candidates(self, request: RequestInfo) -> list[_Candidate] | None:
        inputs = _field(request, b"signature-input")
        signatures = _field(request, b"signature")
        if inputs is None and signatures is None:
            return None
        if inputs is None or signatures is None:
            raise self._error("malformed_signature", "send Signature and Signature-Input together")
        if len(inputs) > MAX_FIELD_BYTES or len(signatures) > MAX_FIELD_BYTES:
            raise self._error("malformed_signature", f"Signature and Signature-Input are limited to "
                              f"{MAX_FIELD_BYTES} bytes each")
        try:
            input_members = structured.parse_dictionary(inputs, unique=True)
            signature_members = structured.parse_dictionary(signatures, unique=True)
        except StructuredFieldError as exc:
            raise self._error("malformed_signature", f"Signature or Signature-Input is malformed: {exc}") from exc
        if len(input_members) > MAX_SIGNATURES or len(signature_members) > MAX_SIGNATURES:
            raise self._error("malformed_signature", f"send at most {MAX_SIGNATURES} signatures")
        candidates = []
        for label, member in input_members.items():
            if not isinstance(member, InnerList) or not all(type(i.value) is str for i in member.items):
                raise self._error("malformed_signature",
                                  f"Signature-Input {label} must be an inner list of component strings")
            signature = signature_members.get(label)
            if signature is None:
                raise self._error("malformed_signature", f"Signature has no member for label {label}")
            if not isinstance(signature, Item) or not isinstance(signature.value, bytes):
                raise self._error("malformed_signature", f"Signature {label} must be a byte sequence")
            try:
                identifiers = tuple(component_identifier(item) for item in member.items)
            except SignatureBaseError as exc:
                raise self._error("malformed_signature", str(exc)) from exc
            candidates.append(_Candidate(label, member, signature.value, identifiers))
        return candidates

    # -- 2. selection by policy ------------------------------------------------------------

    def _eligible(self, candidates: list[_Candidate], has_body: bool) -> tuple[list[_Candidate], tuple[str, str]]:
        tag = self.config.tag
        tagged = [c for c in candidates if tag is None or c.param("tag") == tag]
        if not tagged:
            return [], ("wrong_tag", f'no signature carries tag="{tag}"')
        required = [r for r in self._required if has_body or r != '"content-digest"']
        eligible, missing = [], ""
        for candidate in tagged:
            covered = set(candidate.identifiers)
            lacking = [r for r in required if r not in covered]
            if lacking:
                missing = missing or lacking[0]
            else:
                eligible.append(candidate)
        if not eligible:
            return [], ("missing_component", f"the signature must cover {missing} "
                        f"(required: {', '.join(self._required)})")
        return eligible, ("bad_signature", "no signature verified")

    # -- 3, 4. parameters, key, base, cryptography ---------------------------------------------

    async def _try(self, candidate: _Candidate, message: SignedMessage, principal: Principal) -> VerifiedSignature:
        created, nonce = self._check_params(candidate.covered.params)
        keyid = candidate.covered.params.get("keyid")
        try:
            key = await self.keyring.resolve(keyid if isinstance(keyid, str) else None, principal)
        except KeyNotFound as exc:
            raise _Rejected(exc.failure, str(exc)) from exc
        self._check_algorithm(candidate, key)
        try:
            base = signature_base(candidate.covered, message, candidate.identifiers)
        except SignatureBaseError as exc:
            raise _Rejected("invalid_component", str(exc)) from exc
        if not key.verify(candidate.signature, base.encode("ascii")):
            raise _Rejected("bad_signature", "the signature does not verify over the request as received "
                            "(check the covered components, the public URL and the key)")
        tag = candidate.covered.params.get("tag")
        return VerifiedSignature(candidate.label, keyid if isinstance(keyid, str) else None, key.thumbprint, key.alg,
                                 candidate.identifiers, created, nonce,
                                 tag if isinstance(tag, str) else None)

    def _check_params(self, params: structured.Params) -> tuple[int, str | None]:
        for name in _STRING_PARAMS:
            value = params.get(name)
            if value is not None and type(value) is not str:
                raise _Rejected("malformed_signature", f"the {name} parameter must be a string")
        created, expires = params.get("created"), params.get("expires")
        if not _is_int(created):
            raise _Rejected("missing_created", "the signature must carry created=<unix time> (an integer)")
        if expires is not None and not _is_int(expires):
            raise _Rejected("malformed_signature", "the expires parameter must be an integer")
        now, skew = self.clock.time(), self.config.clock_skew_seconds
        assert isinstance(created, int)
        if created > now + skew:
            raise _Rejected("created_in_future", "the signature's created time is in the future; check the clock")
        if created < now - self.config.max_age_seconds - skew:
            raise _Rejected("too_old", f"the signature is older than {self.config.max_age_seconds} seconds; "
                            "sign each request afresh")
        if isinstance(expires, int) and now > expires + skew:
            raise _Rejected("expired", "the signature has expired")
        nonce = params.get("nonce")
        if self.config.require_nonce and not nonce:
            raise _Rejected("missing_nonce", "this resource requires a nonce parameter, unique per request")
        return created, nonce if isinstance(nonce, str) else None

    def _check_algorithm(self, candidate: _Candidate, key: SignatureKey) -> None:
        alg = candidate.param("alg")
        if alg is not None and alg != key.alg:
            raise _Rejected("algorithm_mismatch", f"the alg parameter says {str(alg)[:32]} but the key is {key.alg}")
        if key.alg not in self.config.algorithms:
            raise _Rejected("algorithm_not_allowed", f"{key.alg} signatures are not accepted here")

    def _message(self, request: RequestInfo) -> SignedMessage:
        query = request.query_string.decode("latin-1") if request.query_string else None
        return SignedMessage(method=request.method, scheme=self.scheme, authority=self.authority,
                             path=request.raw_path.decode("latin-1"), query=query, headers=_RequestFields(request))

    # -- 5, 6. body and nonce --------------------------------------------------------------------

    async def _check_digest(self, request: RequestInfo, body: bytes) -> None:
        field = _field(request, b"content-digest")
        assert field is not None  # the covered field was in the signature base
        if len(field) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"Content-Digest is limited to {MAX_FIELD_BYTES} bytes")
        try:
            check_content_digest(field, body)
        except DigestError as exc:
            if exc.mismatch:
                raise InvalidDigest(str(exc)) from exc
            raise InvalidRequest(str(exc)) from exc

    async def _record_nonce(self, signature: VerifiedSignature) -> None:
        if signature.nonce is None:
            return
        window = self.config.max_age_seconds + 2 * self.config.clock_skew_seconds
        try:
            fresh = await self.replay.first_use((self.resource_id, signature.key_thumbprint, signature.nonce), window)
        except ReplayCacheUnavailable as exc:
            raise DependencyUnavailable(f"{exc}; signed requests with nonces are refused until it is back") from exc
        if not fresh:
            raise self._error("replayed_nonce", "this nonce was already used; sign each request with a new nonce")

    # -- errors --------------------------------------------------------------------------------

    def _error(self, failure: str, description: str) -> InvalidSignature:
        # descriptions may quote a client-chosen label or component name: keep them short
        return InvalidSignature(description[:300], failure=failure, accept_signature=self.accept_signature())

    def accept_signature(self) -> str:
        """RFC 9421 section 5: the components and parameters an acceptable signature has."""
        params: dict[str, structured.BareItem] = {"created": True}
        if self.config.require_nonce:
            params["nonce"] = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if self.config.tag is not None:
            params["tag"] = self.config.tag
        wanted = InnerList(tuple(Item(name) for name in self.config.components), params)
        return structured.serialize_dictionary({"sig1": wanted})


def _field(request: RequestInfo, name: bytes) -> str | None:
    lines = request.header_values(name)
    if not lines:
        return None
    return b", ".join(lines).decode("latin-1")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
