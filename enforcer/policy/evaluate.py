"""One request evaluated the way the server would answer it, without a network.

``policy explain`` and ``policy test`` both come through here, so a case that passes
describes what ``enforcer serve`` does. The stages are the server's own functions, in the
server's order: ``pipeline.request_path`` and ``select_route`` (method and path checks,
then the longest prefix), ``extract.bearer_token``, the token's claims (taken as verified:
there is no key to check a signature with and no clock worth trusting, so ``typ``, the
signature and the times are not checked, but the issuer is chosen by exact ``iss`` among the
resource's issuers and ``aud``, when the claims carry one, must name the resource, as the
server requires), the JSON-RPC body check (every POST to an MCP resource, and requests with
``Mcp-Method`` / ``Mcp-Name``), then the rules compiled by ``pipeline.compile_rules``, one
decision per JSON-RPC message as the server makes it, and ``raise_for_decision``. MCP session
bindings are state of a running server and are not part of an evaluation. Request
signatures are not verified (there is no signature to verify); the steps say so rather
than pass silently.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from enforcer.auth import strictjson
from enforcer.auth.claims import canonical_resource, check_act, parse_audiences
from enforcer.auth.extract import bearer_token
from enforcer.context import Principal, RequestInfo, ShadowResult
from enforcer.errors import BodyTooLarge, EnforcerError, InvalidToken, InvalidWorkload, Reason
from enforcer.mcp.filter import ListFilter
from enforcer.mcp.inspect import JsonRpcMessage, check_headers, parse_messages
from enforcer.pipeline import compile_rules, inspects, raise_for_decision, request_path, select_route
from enforcer.policy.engine import Explanation, Operation
from enforcer.policy.loader import Policy
from enforcer.policy.model import Issuer, Resource
from enforcer.routing import Route, Router

#: what stands in for the token in the Authorization header when claims are given
_STAND_IN = b"Bearer claims-taken-as-verified"
MAX_CLAIMS_BYTES = 65536


@dataclass(frozen=True)
class Probe:
    """A request as a case file or the command line describes it."""

    method: str
    path: str  # the request target as sent: path, optionally ``?query``
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    time: float | None = None  # the instant time-boxed rules are judged at (seconds since the epoch); None: now
    workload: str | None = None  # the workload identity the request proves (taken as verified)

    def request_info(self, *, token: str | None, with_token: bool) -> RequestInfo:
        """The ``RequestInfo`` the server would build. With ``with_token`` the request carries an
        Authorization header (``token``, or a stand-in for claims) unless one is given."""
        headers = [(name.strip().lower().encode("latin-1"), value.encode("utf-8")) for name, value in self.headers]
        if with_token and not any(name == b"authorization" for name, _ in headers):
            headers.append((b"authorization", b"Bearer " + token.encode("ascii") if token else _STAND_IN))
        if self.body is not None and not any(name == b"content-length" for name, _ in headers):
            headers.append((b"content-length", str(len(self.body)).encode("ascii")))
        path, _, query = self.path.partition("?")
        return RequestInfo(method=self.method, raw_path=path.encode("utf-8"), query_string=query.encode("utf-8"),
                           headers=tuple(headers))


@dataclass(frozen=True)
class Step:
    """One stage before the rules: what it found, or why it refused (``ok`` false)."""

    stage: str  # request | route | token | workload | signature | body | policy
    ok: bool
    detail: str


@dataclass(frozen=True)
class Evaluation:
    """The answer the server would give, and how it got there."""

    probe: Probe
    steps: tuple[Step, ...]
    status: int  # 200: forwarded to the upstream (whose own status is not known here)
    reason: Reason
    error: str | None = None  # the OAuth error code of a refusal
    description: str = ""
    rule: str | None = None
    scopes: tuple[str, ...] = ()  # every scope the operation needs, for insufficient_scope
    resource: Resource | None = None
    explanation: Explanation | None = None  # when the rules were evaluated
    claims: Mapping[str, Any] | None = None
    principal: Principal | None = None
    operation: Operation | None = None  # what the rules judged (its message: the first of the body)

    @property
    def allowed(self) -> bool:
        return self.error is None

    @property
    def decision(self) -> str:
        return "allow" if self.allowed else "deny"

    @property
    def shadow(self) -> ShadowResult | None:
        """The shadow result the audit record would carry (only when it differs)."""
        return self.explanation.decision.shadow if self.explanation is not None else None


class Evaluator:
    """The server's routing and compiled rules for one loaded policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.router = Router(policy.resources)
        self.rules = compile_rules(policy)

    def evaluate(self, claims: Mapping[str, Any] | None, probe: Probe, *, token: str | None = None) -> Evaluation:
        """``claims`` stand for a verified token (None: the request carries no token)."""
        steps: list[Step] = []
        stage, route, explanation = "request", None, None
        try:
            request = probe.request_info(token=token, with_token=claims is not None)
            path = request_path(request)
            stage = "route"
            route = select_route(self.router, request, path)
            steps.append(Step("route", True, route_text(route)))
            stage = "token"
            bearer_token(request)
            principal, detail = principal_from_claims(claims or {}, route.resource, self.policy.issuers)
            steps.append(Step("token", True, detail))
            principal = with_workload(principal, route.resource, probe.workload, steps)
            if route.resource.signatures is not None:
                steps.append(Step("signature", True, _signature_text(route.resource)))
            stage = "body"
            messages = inspect_body(request, probe.body, route.resource)
            steps.append(Step("body", True, body_text(request, messages, route.resource)))
            stage = "policy"
            at = probe.time if probe.time is not None else time.time()
            operation = Operation(request.method, path, at)
            explanation = self.rules[route.resource.id].explain_messages(principal, operation, messages)
            raise_for_decision(explanation.decision)
        except EnforcerError as error:
            if stage != "policy":
                steps.append(Step(stage, False, error.description))
            return Evaluation(probe, tuple(steps), error.status, error.reason, error.error, error.description,
                              error.rule, getattr(error, "scopes", ()), route.resource if route else None,
                              explanation, claims)
        return Evaluation(probe, tuple(steps), 200, Reason.ALLOWED, rule=explanation.decision.rule,
                          resource=route.resource, explanation=explanation, claims=claims, principal=principal,
                          operation=operation)

    def visible_tools(self, evaluation: Evaluation, tools: tuple[str, ...]) -> tuple[str, ...]:
        """Which of ``tools`` (an upstream's ``tools/list``) the caller of an allowed request
        would be shown, as the server filters the list; nothing for a refused request."""
        resource, principal, operation = evaluation.resource, evaluation.principal, evaluation.operation
        if not evaluation.allowed or resource is None or principal is None or operation is None:
            return ()
        options = resource.mcp_options
        if options is None or not options.filter_lists:
            return tools
        listing = ListFilter(self.rules[resource.id], principal, operation._replace(method="POST", message=None))
        return tuple(name for name in tools if listing.usable("tools/call", name))


def with_workload(principal: Principal, resource: Resource, workload: str | None, steps: list[Step]) -> Principal:
    """The workload identity the server would know: the probe's, taken as verified, on a resource
    with ``workload_identity`` (elsewhere the server derives none); ``InvalidWorkload`` where the
    resource requires one and the probe proves none."""
    config = resource.workload_identity
    if config is None:
        return principal
    if workload is None:
        if config.required:
            raise InvalidWorkload("this resource requires a workload identity (mTLS, Client-Cert or JWT-SVID)")
        steps.append(Step("workload", True, "none proven (not required)"))
        return principal
    steps.append(Step("workload", True, f"{workload}, taken as verified"))
    return replace(principal, workload=workload)


def route_text(route: Route) -> str:
    match = f"path_prefix {route.prefix}" + (f", host {route.host}" if route.host else "")
    return f"resource {route.resource.id} ({match})"


def principal_from_claims(claims: Mapping[str, Any], resource: Resource,
                          issuers: Mapping[str, Issuer]) -> tuple[Principal, str]:
    """The principal the server would build from these claims, and what was checked; raises
    ``InvalidToken`` where the server would refuse the token."""
    issuer = _issuer(claims.get("iss"), resource, issuers)
    audience = _audience(claims, resource)
    sub, client_id = _string(claims, "sub"), _string(claims, "client_id")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidToken("the scope claim must be scope tokens separated by single spaces (RFC 6749 3.3)")
    act = claims.get("act")
    if act is not None:
        check_act(act)
    principal = Principal(issuer_id=issuer.id, iss=issuer.issuer, sub=sub, client_id=client_id,
                          scopes=frozenset(scope.split(" ")) - {""}, jti=str(claims.get("jti", "")), exp=0,
                          token_hash="", act=act, claims=dict(claims))
    return principal, f"issuer {issuer.id}; {audience}; signature and times not checked"


def _issuer(iss: Any, resource: Resource, issuers: Mapping[str, Issuer]) -> Issuer:
    if iss is None:
        raise InvalidToken("the token lacks required claims: iss")
    for issuer_id in resource.issuers:
        if issuers[issuer_id].issuer == iss:
            return issuers[issuer_id]
    raise InvalidToken("the token's issuer (iss) is not accepted by this resource")


def _audience(claims: Mapping[str, Any], resource: Resource) -> str:
    if "aud" not in claims:
        return "aud not given, not checked"
    if canonical_resource(resource.resource) not in parse_audiences(claims["aud"]):
        raise InvalidToken(f"the token's audience does not include {resource.resource}; request a token for it")
    return f"aud includes {resource.resource}"


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"the token's {name} claim must be a non-empty string")
    return value


def _signature_text(resource: Resource) -> str:
    assert resource.signatures is not None
    if resource.signatures.required:
        return "not checked: this resource requires a request signature; the request is taken as signed"
    return "not checked: a signature, when sent, must verify"


def inspect_body(request: RequestInfo, body: bytes | None, resource: Resource) -> tuple[JsonRpcMessage, ...]:
    """The server's body check: the JSON-RPC messages of the body, when the server reads it."""
    if not inspects(request, resource.mcp_options):
        return ()
    limit = resource.limits.max_body_bytes
    data = body or b""
    if len(data) > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    messages = parse_messages(data, limit)
    check_headers(request, messages)
    return messages


def body_text(request: RequestInfo, messages: tuple[JsonRpcMessage, ...], resource: Resource) -> str:
    if not messages:
        if resource.mcp_options is not None:
            return "not inspected (an MCP resource reads the bodies of POSTs; no Mcp-Method or Mcp-Name header)"
        return "not inspected (no Mcp-Method or Mcp-Name header)"
    found = "; ".join(" ".join(str(v) for v in message.summary().values() if v) for message in messages)
    headers = request.header(b"mcp-method") is not None or request.header(b"mcp-name") is not None
    return f"JSON-RPC {found}" + (": agrees with the Mcp-* headers" if headers else "")


def claims_from_token(token: str) -> dict[str, Any]:
    """The payload of a compact JWT, decoded without any verification (``--no-verify``)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ValueError("the token is not a compact JWT (three dot-separated parts)")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = strictjson.loads(payload, max_bytes=MAX_CLAIMS_BYTES)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the token's payload is not base64url JSON ({exc})") from None
    if not isinstance(claims, dict):
        raise ValueError("the token's payload is not a JSON object")
    return claims
