"""Stages 2-8 of a request (DESIGN.md section 1), in order, without HTTP machinery.

``Pipeline.authorize`` takes what arrived and either returns an ``Authorized`` request,
ready to forward, or raises the ``EnforcerError`` that ends it. It records what each
stage learned in the caller's ``Outcome`` so the response, the metrics and the audit
trail agree even when a later stage refuses. Request signatures and MCP body inspection
sit between token verification and the policy decision; both may need the body, which
is read at most once (``_Body``) and forwarded as read. On an MCP resource every POST body
is JSON-RPC and each message is judged; an allowed request that names an MCP session must
name one the upstream issued to this caller (``mcp/sessions.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from enforcer.auth.dpop import DPoPVerifier, check_bearer_binding, dpop_token_error
from enforcer.auth.extract import bearer_token
from enforcer.auth.httpsig import SignatureVerifier
from enforcer.auth.tokens import TokenVerifier
from enforcer.auth.workload import WorkloadVerifier, check_certificate_binding
from enforcer.context import Decision, Outcome, Principal, RequestInfo
from enforcer.errors import (
    AccessDenied,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    NoRoute,
    Reason,
    UnknownSession,
)
from enforcer.mcp.inspect import JsonRpcMessage, check_headers, needs_inspection, parse_messages
from enforcer.mcp.sessions import SessionStore, owner_of, session_key
from enforcer.policy.engine import Operation, ResourcePolicy
from enforcer.policy.loader import Policy
from enforcer.policy.model import McpOptions, Resource
from enforcer.routing import METHOD, Route, Router, clean_path

BodyReader = Callable[[int], Awaitable[bytes]]
log = logging.getLogger("enforcer.policy")


@dataclass(frozen=True)
class Authorized:
    """What forwarding needs from the stages: who is calling, and the body if a stage read it."""

    principal: Principal
    decision: Decision
    body: bytes | None = None
    messages: tuple[JsonRpcMessage, ...] = ()  # the JSON-RPC messages of the body, when it was inspected


class _Body:
    """The request body, read on first need (with the resource's cap) and kept."""

    def __init__(self, reader: BodyReader | None, limit: int) -> None:
        self.reader, self.limit = reader, limit
        self.value: bytes | None = None

    async def read(self) -> bytes:
        if self.value is None:
            if self.reader is None:
                raise InvalidRequest("this request's body cannot be inspected")
            self.value = await self.reader(self.limit)
        return self.value


class Pipeline:
    def __init__(self, policy: Policy, verifier: TokenVerifier,
                 signatures: dict[str, SignatureVerifier] | None = None, sessions: SessionStore | None = None,
                 *, dpop: dict[str, DPoPVerifier] | None = None) -> None:
        self.router = Router(policy.resources)
        self.verifier = verifier
        self.signatures = signatures or {}
        #: resource id -> its DPoP verifier (only resources with ``dpop: required | allowed``)
        self.dpop = dpop or {}
        #: resource id -> its workload stage (only resources with ``workload_identity``)
        self.workloads = {r.id: WorkloadVerifier(r.workload_identity, r.resource, verifier.clock)
                          for r in policy.resources if r.workload_identity is not None}
        self.sessions = sessions
        self.rules = compile_rules(policy)
        #: resource id -> its MCP handling (None: a plain HTTP resource)
        self.mcp: dict[str, McpOptions | None] = {r.id: r.mcp_options for r in policy.resources}
        # per-rule traces on live requests, logged at debug level: only when that level is on
        self.explain = log.isEnabledFor(logging.DEBUG)

    def route(self, request: RequestInfo, outcome: Outcome) -> Route:
        """Stages 2-3: an unambiguous method and path, then the resource that owns it."""
        path = request_path(request)
        outcome.path = path
        route = select_route(self.router, request, path)
        outcome.resource_id = route.resource.id
        return route

    async def authorize(self, request: RequestInfo, route: Route, outcome: Outcome,
                        read_body: BodyReader | None = None) -> Authorized:
        """Stages 4-8 for a routed request: token, signature, body inspection when needed, then policy.

        The body is read only after the token verified (an anonymous client cannot make the
        enforcer buffer anything), through ``read_body(limit)``, which raises ``BodyTooLarge``."""
        resource = route.resource
        stages, clock = outcome.stages, time.perf_counter
        started = clock()
        principal = await self.identify(request, resource, outcome)
        stages["token"] = (now := clock()) - started
        body = _Body(read_body, resource.limits.max_body_bytes)
        signatures = self.signatures.get(resource.id)
        if signatures is not None:
            started = now
            outcome.signature = await signatures.verify(request, principal, request.has_body, body.read)
            stages["signature"] = (now := clock()) - started
        mcp = self.mcp[resource.id]
        messages: tuple[JsonRpcMessage, ...] = ()
        if inspects(request, mcp):
            started = now
            messages = parse_messages(await body.read(), resource.limits.max_body_bytes)
            outcome.messages = messages
            check_headers(request, messages)
            stages["inspection"] = (now := clock()) - started
        operation = Operation(request.method, outcome.path, self.verifier.clock.time())
        decision = self.rules[resource.id].decide_messages(principal, operation, messages, explain=self.explain)
        stages["policy"] = clock() - now
        outcome.decision = decision
        if self.explain:
            log_decision(request, resource.id, decision)
        raise_for_decision(decision)
        if mcp is not None and mcp.bind_sessions and self.sessions is not None:
            await check_session(self.sessions, request, resource, mcp, principal)
        return Authorized(principal, decision, body.value, messages)


    async def identify(self, request: RequestInfo, resource: Resource, outcome: Outcome) -> Principal:
        """Who is calling: the verified token, its proof of possession (a DPoP proof, or the
        certificate a ``cnf`` binds it to) and the workload identity the resource asks for."""
        dpop = self.dpop.get(resource.id)  # None: Bearer only (dpop: off), no DPoP work at all
        token, bound = (bearer_token(request), False) if dpop is None else dpop.credentials(request)
        try:
            principal = (self.verifier.verify_cached(token, resource.issuers, resource.resource)
                         or await self.verifier.verify(token, resource.issuers, resource.resource))
        except InvalidToken as error:
            if bound:  # sent as DPoP: challenged in the DPoP scheme (RFC 9449 section 7.1)
                raise dpop_token_error(error) from error
            raise
        outcome.principal = principal
        if dpop is not None:  # the proof (RFC 9449 section 4.3)
            await dpop.verify(request, token, bound, principal)
        elif principal.cnf is not None:
            check_bearer_binding(principal, resource)
        workload = self.workloads.get(resource.id)
        if workload is not None:  # cnf x5t#S256 binding, then who is calling (a SPIFFE ID)
            principal = outcome.principal = workload.identify(request, principal)
        elif principal.cnf is not None:  # RFC 8705: a certificate-bound token needs its certificate everywhere
            check_certificate_binding(principal, request.client_cert)
        return principal


def inspects(request: RequestInfo, mcp: McpOptions | None) -> bool:
    """Whether the body is read as JSON-RPC: every POST to an MCP resource, and any request
    with ``Mcp-Method`` / ``Mcp-Name`` headers (which must agree with it)."""
    return (mcp is not None and request.method == "POST") or needs_inspection(request)


def session_id(request: RequestInfo) -> str | None:
    """The MCP session a request names: ``Mcp-Session-Id``, or the legacy SSE transport's
    ``session_id`` query parameter. More than one is ambiguous and refused."""
    ids = [value.decode("latin-1") for value in request.header_values(b"mcp-session-id")]
    if b"session_id=" in request.query_string:
        ids += parse_qs(request.query_string.decode("latin-1"), keep_blank_values=True).get("session_id", [])
    if len(ids) > 1:
        raise InvalidRequest("name one MCP session: one Mcp-Session-Id header or one session_id parameter")
    return ids[0] if ids else None


async def check_session(sessions: SessionStore, request: RequestInfo, resource: Resource, mcp: McpOptions,
                        principal: Principal) -> None:
    """A named session must have been issued to this caller (``UnknownSession`` otherwise)."""
    named = session_id(request)
    if named is None:
        return
    owner = await sessions.owner(session_key(resource.id, named), mcp.session_ttl_seconds)
    if owner != owner_of(principal):
        raise UnknownSession("this MCP session is not known for this caller; start a new session (initialize)")


def compile_rules(policy: Policy) -> dict[str, ResourcePolicy]:
    """Each resource's compiled rules, by resource id (``policy explain`` and ``policy test``
    compile them through here too)."""
    return {resource.id: ResourcePolicy.for_resource(resource) for resource in policy.resources}


def request_path(request: RequestInfo) -> str:
    """Stage 3: the method must be an upper-case token and the path unambiguous; the decoded path."""
    if not METHOD.match(request.method):
        raise InvalidRequest("the method must be an upper-case token such as GET or POST")
    return clean_path(request.raw_path)


def select_route(router: Router, request: RequestInfo, path: str) -> Route:
    """Stage 2: the resource that owns ``path`` (and the Host header, for resources that name one)."""
    host = (request.header(b"host") or b"").decode("latin-1")
    route = router.route(host, path)
    if route is None:
        raise NoRoute("no protected resource is served at this path")
    return route


def log_decision(request: RequestInfo, resource_id: str, decision: Decision) -> None:
    """The decision trace of one live request, at debug level: rule ids and condition results,
    which name patterns of the policy, never the token or the caller's claim values."""
    log.debug("policy decision", extra={
        "request_id": request.request_id, "resource": resource_id,
        "decision": "allow" if decision.allowed else "deny", "reason": str(decision.reason), "rule": decision.rule,
        "trace": [trace.record() for trace in decision.trace],
        "shadow": decision.shadow.record() if decision.shadow is not None else None})


def raise_for_decision(decision: Decision) -> None:
    """Turn a refusal into its error; an allow returns quietly."""
    if decision.allowed:
        return
    if decision.reason is Reason.INSUFFICIENT_SCOPE:
        raise InsufficientScope(
            "the token lacks scopes this operation requires; request a token with every listed scope",
            scopes=decision.required_scopes, rule=decision.rule,
        )
    if decision.reason is Reason.DENIED_BY_RULE:
        raise AccessDenied(f"denied by policy rule {decision.rule}", rule=decision.rule, reason=decision.reason)
    raise AccessDenied("no policy rule allows this request", rule=None, reason=decision.reason)
