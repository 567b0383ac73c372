"""The frozen records that one request's stages hand to each other.

``RequestInfo`` is what arrived (taken from the ASGI scope before anything is
rewritten), ``Principal`` is who the verified token says is calling, ``Decision`` is
what the policy concluded and why. The pipeline, the audit trail and the metrics all
read these, so they carry no HTTP machinery and can be built by hand in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from enforcer.errors import Reason


@dataclass(frozen=True)
class RequestInfo:
    """A request as received at the enforcer."""

    method: str
    raw_path: bytes
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # lower-cased names, in arrival order
    scheme: str = "http"
    client: str | None = None
    request_id: str = ""  # the trace id when there is one, else a fresh random id
    trace_id: str | None = None  # the trace id of a valid inbound W3C ``traceparent``
    client_cert: bytes | None = None  # DER of the client certificate the TLS layer verified (mutual TLS)

    @cached_property
    def _by_name(self) -> dict[bytes, list[bytes]]:
        """Header values by name, built on first use (several stages look headers up)."""
        index: dict[bytes, list[bytes]] = {}
        for key, value in self.headers:
            if key in index:
                index[key].append(value)
            else:
                index[key] = [value]
        return index

    def header_values(self, name: bytes) -> list[bytes]:
        return self._by_name.get(name, [])

    def header(self, name: bytes) -> bytes | None:
        values = self._by_name.get(name)
        return values[0] if values else None

    @property
    def has_body(self) -> bool:
        """Whether a body follows (a chunked one, or a non-zero Content-Length)."""
        if self.header(b"transfer-encoding") is not None:
            return True
        length = self.header(b"content-length")
        return length is not None and length.strip() != b"0"


@dataclass(frozen=True)
class Principal:
    """Verified identity: the agent (``client_id``) acting for ``sub``, per its issuer."""

    issuer_id: str
    iss: str
    sub: str
    client_id: str
    scopes: frozenset[str]
    jti: str
    exp: int
    token_hash: str  # short sha256 of the token, for logs and audit; never the token
    act: dict[str, Any] | None = None
    claims: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: the token's ``cnf`` claim (RFC 7800: ``jkt`` for DPoP, ``x5t#S256`` for mTLS), checked to be an object
    cnf: dict[str, Any] | None = None
    #: the verified workload identity (a SPIFFE ID) of the caller, set by the workload stage
    #: (``auth/workload.py``) from an mTLS certificate, a trusted Client-Cert header or a JWT-SVID
    workload: str | None = None


@dataclass(frozen=True)
class ConditionResult:
    """One condition of a rule, evaluated: the rule key it comes from (``methods``, ``scopes``,
    ...), whether it held, and a description that names the patterns, never the caller's
    claim values (traces go to debug logs)."""

    condition: str
    holds: bool
    detail: str


@dataclass(frozen=True)
class RuleTrace:
    """How one rule fared: ``matched`` and, when not, the first condition that failed
    (``detail``); ``conditions`` holds every condition's result, in evaluation order."""

    rule: str
    effect: str
    matched: bool
    detail: str
    mode: str = "enforce"  # or "shadow": evaluated and recorded, never enforced
    conditions: tuple[ConditionResult, ...] = ()

    def record(self) -> dict[str, Any]:
        """The trace as JSON (``policy explain --format json``, debug logs)."""
        return {"rule": self.rule, "effect": self.effect, "mode": self.mode, "matched": self.matched,
                "detail": self.detail,
                "conditions": [{"condition": c.condition, "holds": c.holds, "detail": c.detail}
                               for c in self.conditions]}


@dataclass(frozen=True)
class ShadowResult:
    """What the policy would answer if its shadow rules were enforced too; present on a
    ``Decision`` only when that answer differs from the live one (see ``policy/engine.py``)."""

    result: str  # "would_deny" | "would_allow": the metric label and the audit ``decision``
    reason: Reason
    rule: str | None = None
    required_scopes: tuple[str, ...] = ()

    def record(self) -> dict[str, str | None]:
        """The audit record's ``shadow`` field."""
        return {"decision": self.result, "rule": self.rule, "reason": str(self.reason)}


@dataclass(frozen=True)
class Decision:
    """The policy's answer. ``required_scopes`` is set for ``insufficient_scope``; ``shadow``
    when the resource has shadow rules and they would have answered differently."""

    allowed: bool
    reason: Reason
    rule: str | None = None
    required_scopes: tuple[str, ...] = ()
    trace: tuple[RuleTrace, ...] = ()
    shadow: ShadowResult | None = None


@dataclass
class Outcome:
    """What happened to one request so far; filled stage by stage, read in the ``finally``
    that records metrics (and, later, the audit record). Mutable on purpose: a stage that
    raises still leaves what the earlier stages learned."""

    resource_id: str = ""
    path: str = ""
    principal: Principal | None = None
    decision: Decision | None = None
    signature: Any = None  # the accepted ``httpsig.VerifiedSignature``, when the resource asks for one
    messages: tuple[Any, ...] = ()  # the inspected JSON-RPC messages (``mcp.inspect.JsonRpcMessage``)
    status: int = 0  # ours, or the upstream's when the request was forwarded
    forwarded: bool = False  # the upstream answered (``status`` is its status)
    reason: Reason = Reason.INTERNAL_ERROR
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (token, signature, ...)

    @property
    def mcp(self) -> tuple[dict[str, Any], ...]:
        """Method and tool / prompt / resource of each inspected JSON-RPC message (the audit record's)."""
        return tuple(message.summary() for message in self.messages)
