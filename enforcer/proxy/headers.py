"""Header rewriting for both directions of the proxy.

Requests lose hop-by-hop headers (RFC 9110 section 7.6.1) and whatever their
``Connection`` header names, every inbound ``X-Enforcer-*`` (only the enforcer may set
those), the forwarding headers a client could forge, the method and URL override headers
that would make an upstream run something other than what the policy judged, every header
whose name contains ``_`` (CGI, WSGI and PHP fold ``X-Enforcer_Sub`` into the same
variable as ``X-Enforcer-Sub``; nginx drops them by default for the same reason), and the
token unless the resource says ``forward_token: true``. Then the verified identity is
added. Values taken from claims are percent-encoded outside printable ASCII so no claim
can inject a header.

A request signature travels with the token: ``Signature`` and ``Signature-Input`` are
dropped with ``Authorization`` (the enforcer verified them; without the token the upstream
could not check a signature that covers it, and a signature is a credential like any other).
A DPoP proof (``DPoP``, RFC 9449) goes the same way, for the same reasons.

Workload credentials never pass, whatever ``forward_token`` says: RFC 9440 ``Client-Cert`` /
``Client-Cert-Chain`` (from an untrusted peer they are forgeries, from a trusted proxy the
enforcer has read them) and the resource's JWT-SVID header. The upstream learns the verified
workload identity as ``X-Enforcer-Workload`` (``workload_header``).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection",
})
#: set by the enforcer itself, or claims about the client that only the enforcer may make
_REPLACED = frozenset({
    b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-forwarded-port",
    b"x-forwarded-prefix", b"x-forwarded-server", b"x-real-ip", b"true-client-ip", b"x-request-id",
})
#: frameworks run the method or path these name instead of the request's own
_OVERRIDES = frozenset({
    b"x-http-method-override", b"x-http-method", b"x-method-override", b"x-original-url", b"x-rewrite-url",
    b"x-original-method",
})
#: the caller's credentials: they reach the upstream only with ``forward_token: true``
_CREDENTIALS = frozenset({b"authorization", b"signature", b"signature-input", b"dpop"})
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%") + " "
#: RFC 9440 certificates from a TLS terminator: what they say reaches the upstream only as the
#: verified ``X-Enforcer-Workload``, and from an untrusted peer they are a forgery
_CLIENT_CERTS = frozenset({b"client-cert", b"client-cert-chain"})
_ALWAYS_DROPPED = HOP_BY_HOP | _REPLACED | _OVERRIDES | _CLIENT_CERTS


def connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(names)


def upstream_request_headers(
    headers: Iterable[tuple[bytes, bytes]], *, forward_token: bool, also_drop: frozenset[bytes] = frozenset()
) -> list[tuple[str, str]]:
    """Inbound headers that may pass to the upstream, before identity headers are added.
    ``Client-Cert`` / ``Client-Cert-Chain`` never pass; ``also_drop`` names more (lower-case),
    such as the resource's JWT-SVID header."""
    headers = list(headers)
    dropped = _ALWAYS_DROPPED | connection_named(headers)
    if also_drop:
        dropped |= also_drop
    if not forward_token:
        dropped |= _CREDENTIALS
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name in dropped or name.startswith(b"x-enforcer-") or b"_" in name:
            continue
        if name == b"content-length":
            value = value.strip()  # the parser checked the digits; aiohttp refuses surrounding whitespace
        out.append((name.decode("latin-1"), value.decode("latin-1")))
    return out


@lru_cache(maxsize=4096)
def _identity_headers(
    sub: str, client_id: str, scopes: frozenset[str], act_json: str | None
) -> tuple[tuple[str, str], ...]:
    out = [
        ("x-enforcer-sub", header_safe(sub)),
        ("x-enforcer-client-id", header_safe(client_id)),
        ("x-enforcer-scope", header_safe(" ".join(sorted(scopes)))),
    ]
    if act_json is not None:
        out.append(("x-enforcer-act", header_safe(act_json)))
    return tuple(out)


def identity_headers(sub: str, client_id: str, scopes: frozenset[str], act_json: str | None) -> list[tuple[str, str]]:
    """``X-Enforcer-*`` from verified claims (memoised: agents repeat the same identity)."""
    return list(_identity_headers(sub, client_id, scopes, act_json))


def workload_header(workload: str) -> tuple[str, str]:
    """``X-Enforcer-Workload``: the verified workload identity (a SPIFFE ID, ASCII by construction)."""
    return ("x-enforcer-workload", header_safe(workload))


def forwarded_headers(client: str | None, prior_for: bytes | None, proto: str, host: str) -> list[tuple[str, str]]:
    chain = f"{prior_for.decode('latin-1')}, {client}" if prior_for and client else (client or "")
    out = [("x-forwarded-proto", proto), ("x-forwarded-host", host)]
    if chain:
        out.append(("x-forwarded-for", chain))
    return out


def header_safe(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE)


def downstream_response_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers minus hop-by-hop ones (the server adds its own framing)."""
    headers = list(headers)
    dropped = HOP_BY_HOP | connection_named(headers)
    return [(name, value) for name, value in headers if name.lower() not in dropped]
