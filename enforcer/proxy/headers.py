"""Header rewriting for both directions of the proxy.

Requests lose hop-by-hop headers (RFC 9110 section 7.6.1) and whatever their
``Connection`` header names, every inbound ``X-Enforcer-*`` (only the enforcer may set
those), the forwarding headers a client could forge, and the token unless the resource
says ``forward_token: true``. Then the verified identity is added. Values taken from
claims are percent-encoded outside printable ASCII so no claim can inject a header.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import quote

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection",
})
_REPLACED = frozenset({b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%") + " "


def connection_named(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    names: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            names.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return frozenset(names)


def upstream_request_headers(
    headers: Iterable[tuple[bytes, bytes]], *, forward_token: bool
) -> list[tuple[str, str]]:
    """Inbound headers that may pass to the upstream, before identity headers are added."""
    headers = list(headers)
    dropped = HOP_BY_HOP | _REPLACED | connection_named(headers)
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if name in dropped or name.startswith(b"x-enforcer-"):
            continue
        if name == b"authorization" and not forward_token:
            continue
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
