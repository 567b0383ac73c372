"""The one error hierarchy of the request path, and the reason codes it shares.

Every refusal the enforcer makes is an ``EnforcerError``. The class fixes the HTTP
status, the OAuth ``error`` code and the stable ``Reason`` that also labels metrics and
audit records; one handler (``app.py``) turns any of them into a response, so status
codes and challenges are decided here and nowhere else::

    EnforcerError
    ├── InvalidRequest        400 invalid_request      (ambiguous path, two Authorization headers, token in query)
    │   └── HeaderMismatch    400 invalid_request      (Mcp-Method / Mcp-Name against the JSON-RPC body)
    ├── NoRoute               404 no_route
    ├── UnknownSession        404 invalid_request      (an MCP session id not issued to this caller)
    ├── Unauthorized          401 (challenge carries resource_metadata)
    │   ├── MissingToken      401, no `error` in the challenge (RFC 6750 section 3)
    │   ├── InvalidToken      401 invalid_token
    │   │   └── DPoPInvalidToken 401 invalid_token, DPoP challenge (cnf.jkt binding; bound token sent as Bearer)
    │   ├── InvalidDPoPProof  401 invalid_dpop_proof, DPoP challenge (+ dpop_failure)
    │   ├── UseDPoPNonce      401 use_dpop_nonce, DPoP challenge (+ DPoP-Nonce)
    │   ├── InvalidSignature  401 invalid_signature (+ Accept-Signature saying what to sign)
    │   └── InvalidWorkload   401 invalid_workload (workload identity required but missing, or invalid)
    ├── Forbidden             403
    │   ├── InsufficientScope 403 insufficient_scope, scope="<every scope the operation needs>"
    │   └── AccessDenied      403 access_denied (+ rule id when a rule decided; challenge without scope)
    ├── InvalidDigest         400 invalid_digest       (Content-Digest does not match the body)
    ├── BodyTooLarge          413
    ├── UpstreamUnavailable   502
    │   └── InvalidUpstreamResponse 502 (an MCP list result that cannot be filtered)
    ├── TokenExchangeFailed   502 token_exchange_failed (no downstream token: nothing forwarded)
    ├── UpstreamTimeout       504
    └── DependencyUnavailable 503 (a store the decision needs, e.g. the nonce cache, is down)
        └── SessionStoreUnavailable 503 (the MCP session bindings cannot be read or written)

Descriptions are written for the agent developer who receives them: they say what to
fix, never echo the token, a key or an upstream detail.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Low-cardinality outcome codes: response bodies, audit records and metric labels."""

    ALLOWED = "allowed"
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    NO_MATCHING_RULE = "no_matching_rule"
    DENIED_BY_RULE = "denied_by_rule"
    INVALID_SIGNATURE = "invalid_signature"
    INVALID_DPOP_PROOF = "invalid_dpop_proof"
    USE_DPOP_NONCE = "use_dpop_nonce"
    INVALID_WORKLOAD = "invalid_workload"
    INVALID_DIGEST = "invalid_digest"
    REPLAY_CACHE_UNAVAILABLE = "replay_cache_unavailable"
    INVALID_REQUEST = "invalid_request"
    NO_ROUTE = "no_route"
    UNKNOWN_SESSION = "unknown_session"
    SESSION_STORE_UNAVAILABLE = "session_store_unavailable"
    INVALID_UPSTREAM_RESPONSE = "invalid_upstream_response"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    TOKEN_EXCHANGE_FAILED = "token_exchange_failed"
    BODY_TOO_LARGE = "body_too_large"
    CLIENT_DISCONNECTED = "client_disconnected"
    INTERNAL_ERROR = "internal_error"


class EnforcerError(Exception):
    """A refusal with a fixed status, OAuth error code and reason."""

    status: int = 500
    error: str = "server_error"
    reason: Reason = Reason.INTERNAL_ERROR
    #: whether the response carries a ``WWW-Authenticate: Bearer`` challenge
    challenge: bool = False
    #: the challenge is in the ``DPoP`` scheme whatever the resource also accepts (RFC 9449 section 7.1)
    dpop_scheme: bool = False
    #: the JSON-RPC error code when an MCP resource answers in JSON-RPC (``mcp.error_format``):
    #: -32600 invalid request, -32020 header mismatch, -32001 unauthenticated, -32003 forbidden,
    #: -32603 internal
    jsonrpc_code: int = -32603

    def __init__(self, description: str, *, rule: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.rule = rule

    def body(self) -> dict[str, str]:
        """The small JSON body of DESIGN.md section 4 (``rule`` only when a rule decided)."""
        body = {"error": self.error, "error_description": self.description, "reason": str(self.reason)}
        if self.rule is not None:
            body["rule"] = self.rule
        return body

    def challenge_params(self) -> list[tuple[str, str]]:
        """Auth-params for the challenge, before ``resource_metadata`` is added."""
        return [("error", self.error), ("error_description", self.description)]

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        """Response headers beyond the challenge (e.g. ``Accept-Signature``)."""
        return []


class InvalidRequest(EnforcerError):
    jsonrpc_code = -32600
    status = 400
    error = "invalid_request"
    reason = Reason.INVALID_REQUEST
    challenge = True


class HeaderMismatch(InvalidRequest):
    """``Mcp-Method`` / ``Mcp-Name`` that disagree with the JSON-RPC body (MCP's HeaderMismatch)."""

    jsonrpc_code = -32020


class NoRoute(EnforcerError):
    status = 404
    error = "no_route"
    reason = Reason.NO_ROUTE


class UnknownSession(EnforcerError):
    """An MCP session id the upstream did not issue to this caller (or never issued). Per MCP,
    404 tells a client to start a new session; the same answer for "someone else's" and
    "unknown" means a guessed id reveals nothing."""

    jsonrpc_code = -32600
    status = 404
    error = "invalid_request"
    reason = Reason.UNKNOWN_SESSION


class Unauthorized(EnforcerError):
    jsonrpc_code = -32001
    status = 401
    challenge = True


class MissingToken(Unauthorized):
    error = "missing_token"
    reason = Reason.MISSING_TOKEN

    def challenge_params(self) -> list[tuple[str, str]]:
        # RFC 6750 section 3: no error code when the request carried no credentials.
        return []


class InvalidToken(Unauthorized):
    error = "invalid_token"
    reason = Reason.INVALID_TOKEN


class DPoPInvalidToken(InvalidToken):
    """A token refused on a DPoP request, or for DPoP reasons (its ``cnf.jkt`` is not the proof's
    key, it is bound but came as Bearer, it is not bound but came as DPoP): ``invalid_token`` in
    the DPoP scheme."""

    dpop_scheme = True


class InvalidDPoPProof(Unauthorized):
    """The ``DPoP`` proof (RFC 9449 section 4.3) is missing or fails a check; ``failure`` names
    which (``missing_proof``, ``malformed_proof``, ``wrong_typ``, ``bad_signature``, ...)."""

    error = "invalid_dpop_proof"
    reason = Reason.INVALID_DPOP_PROOF
    dpop_scheme = True

    def __init__(self, description: str, *, failure: str) -> None:
        super().__init__(description)
        self.failure = failure

    def body(self) -> dict[str, str]:
        body = super().body()
        body["dpop_failure"] = self.failure
        return body


class UseDPoPNonce(Unauthorized):
    """The resource wants a server nonce in the proof (RFC 9449 section 9): the ``DPoP-Nonce``
    header carries the one to use."""

    error = "use_dpop_nonce"
    reason = Reason.USE_DPOP_NONCE
    dpop_scheme = True

    def __init__(self, description: str, *, nonce: str) -> None:
        super().__init__(description)
        self.nonce = nonce

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"dpop-nonce", self.nonce.encode("ascii"))]


class InvalidSignature(Unauthorized):
    """A request signature is missing or fails. ``failure`` names the requirement that was
    not met (``missing_signature``, ``missing_component``, ``expired``, ``unknown_key`` ...)
    and ``accept_signature`` is the RFC 9421 section 5 field describing what to sign."""

    error = "invalid_signature"
    reason = Reason.INVALID_SIGNATURE

    def __init__(self, description: str, *, failure: str, accept_signature: str = "") -> None:
        super().__init__(description)
        self.failure = failure
        self.accept_signature = accept_signature

    def body(self) -> dict[str, str]:
        body = super().body()
        body["signature_failure"] = self.failure
        return body

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        if not self.accept_signature:
            return []
        return [(b"accept-signature", self.accept_signature.encode("ascii"))]


class InvalidWorkload(Unauthorized):
    """The resource requires a workload identity (``workload_identity.required``) and the
    request proved none, or a workload credential that was sent is invalid (a JWT-SVID that
    fails, a certificate naming no single SPIFFE ID, two credentials naming different workloads)."""

    error = "invalid_workload"
    reason = Reason.INVALID_WORKLOAD


class InvalidDigest(EnforcerError):
    """The body does not match its signed ``Content-Digest`` (RFC 9530)."""

    jsonrpc_code = -32600
    status = 400
    error = "invalid_digest"
    reason = Reason.INVALID_DIGEST


class Forbidden(EnforcerError):
    jsonrpc_code = -32003
    status = 403
    challenge = True


class InsufficientScope(Forbidden):
    error = "insufficient_scope"
    reason = Reason.INSUFFICIENT_SCOPE

    def __init__(self, description: str, *, scopes: tuple[str, ...], rule: str | None = None) -> None:
        super().__init__(description, rule=rule)
        self.scopes = scopes

    def body(self) -> dict[str, str]:
        body = super().body()
        body["scope"] = " ".join(self.scopes)
        return body

    def challenge_params(self) -> list[tuple[str, str]]:
        return [("error", self.error), ("scope", " ".join(self.scopes)),
                ("error_description", self.description)]


class AccessDenied(Forbidden):
    """A policy refusal that no scope would fix. The challenge (``error="access_denied"``,
    ``resource_metadata``) tells a client that the token was understood and the answer is
    final; only ``insufficient_scope`` invites a client to fetch a new token."""

    error = "access_denied"
    reason = Reason.DENIED_BY_RULE

    def __init__(self, description: str, *, rule: str | None, reason: Reason) -> None:
        super().__init__(description, rule=rule)
        self.reason = reason


class BodyTooLarge(EnforcerError):
    jsonrpc_code = -32600
    status = 413
    error = "invalid_request"
    reason = Reason.BODY_TOO_LARGE


class UpstreamUnavailable(EnforcerError):
    status = 502
    error = "upstream_unavailable"
    reason = Reason.UPSTREAM_UNAVAILABLE


class InvalidUpstreamResponse(UpstreamUnavailable):
    """The upstream's answer had to be rewritten (an MCP list filtered) and could not be parsed;
    it is not passed on unfiltered."""

    reason = Reason.INVALID_UPSTREAM_RESPONSE


class TokenExchangeFailed(EnforcerError):
    """The downstream token (RFC 8693 exchange, ``downstream_token``) could not be obtained or was
    unacceptable (wider scope than the caller's): the request is not forwarded, never with the
    caller's own token instead."""

    status = 502
    error = "token_exchange_failed"
    reason = Reason.TOKEN_EXCHANGE_FAILED


class UpstreamTimeout(EnforcerError):
    status = 504
    error = "upstream_timeout"
    reason = Reason.UPSTREAM_TIMEOUT


class DependencyUnavailable(EnforcerError):
    """A store the decision depends on cannot be reached; the request fails closed."""

    status = 503
    error = "temporarily_unavailable"
    reason = Reason.REPLAY_CACHE_UNAVAILABLE

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1")]


class SessionStoreUnavailable(DependencyUnavailable):
    reason = Reason.SESSION_STORE_UNAVAILABLE
