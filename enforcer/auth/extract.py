"""Find the one bearer token of a request (RFC 6750 section 2.1, header only).

The MCP specification forbids tokens in the query string and RFC 6750 forbids sending
more than one credential, so both are malformed requests (400), never "no token".
Resources with ``dpop: required | allowed`` also take ``Authorization: DPoP <token>``
(RFC 9449 section 7.1; the proof itself is checked in ``dpop.py``).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_to_bytes

from enforcer.context import RequestInfo
from enforcer.errors import DPoPInvalidToken, InvalidRequest, MissingToken

#: RFC 6750 b64token, the one credential after "Bearer " (\Z: "$" would allow a final newline)
_B64TOKEN = re.compile(rb"[A-Za-z0-9\-._~+/]+=*\Z")
MAX_AUTHORIZATION_BYTES = 16384
_NOT_IN_QUERY = "send the access token in the Authorization header, never in the query string"


#: what to send, by the resource's ``dpop`` mode: (no Authorization header, an unaccepted scheme)
_WANTED = {
    "off": ("this resource needs an access token: send Authorization: Bearer <token>",
            "this resource accepts only the Bearer scheme: send Authorization: Bearer <token>"),
    "allowed": ("this resource needs an access token: send Authorization: Bearer <token>, or DPoP <token> "
                "with a DPoP proof header",
                "this resource accepts the Bearer and DPoP schemes: send Authorization: Bearer <token>, or "
                "DPoP <token> with a DPoP proof header"),
    "required": ("this resource needs a DPoP-bound access token: send Authorization: DPoP <token> with a DPoP "
                 "proof header",
                 "this resource accepts only the DPoP scheme: send Authorization: DPoP <token> with a DPoP "
                 "proof header"),
}


def bearer_token(request: RequestInfo) -> str:
    """Return the token, or raise ``MissingToken`` / ``InvalidRequest``."""
    return access_token(request)[0]


def access_token(request: RequestInfo, dpop: str = "off") -> tuple[str, bool]:
    """The token and whether it came with the ``DPoP`` scheme (RFC 9449 section 7.1), or
    ``MissingToken`` / ``InvalidRequest``. ``dpop`` is the resource's mode: ``off`` takes
    ``Bearer`` only, ``required`` ``DPoP`` only, ``allowed`` either (same token syntax)."""
    if _access_token_parameter(request.query_string):
        raise InvalidRequest(_NOT_IN_QUERY)
    values = request.header_values(b"authorization")
    if len(values) > 1:
        raise InvalidRequest("send exactly one Authorization header")
    if not values:
        raise MissingToken(_WANTED[dpop][0])
    value = values[0]
    if len(value) > MAX_AUTHORIZATION_BYTES:
        raise InvalidRequest(f"the Authorization header is larger than {MAX_AUTHORIZATION_BYTES} bytes")
    if dpop != "required" and value[:7].lower() == b"bearer ":
        start, bound = 7, False
    elif dpop != "off" and value[:5].lower() == b"dpop ":
        start, bound = 5, True
    else:
        scheme = value.strip().partition(b" ")[0].lower()
        if (scheme == b"bearer" and dpop != "required") or (scheme == b"dpop" and dpop != "off"):
            name = "DPoP" if scheme == b"dpop" else "Bearer"
            raise InvalidRequest(f"malformed Authorization header: expected '{name}' then one token after a space")
        if dpop == "required" and scheme == b"bearer":  # RFC 9449 section 7.2: never a Bearer token here
            raise DPoPInvalidToken(_WANTED[dpop][1])
        raise MissingToken(_WANTED[dpop][1])
    match = _B64TOKEN.match(value, start)
    if match is None:
        raise InvalidRequest(f"malformed Authorization header: expected '{'DPoP' if bound else 'Bearer'}' then one "
                             "token after a space")
    token = match.group().decode("ascii")
    if _token_in_query(request.query_string, token):
        raise InvalidRequest(_NOT_IN_QUERY)
    return token, bound


def _access_token_parameter(query: bytes) -> bool:
    """An ``access_token`` parameter under any spelling a framework would read as one:
    ASP.NET ignores case; PHP maps ``.`` and spaces to ``_`` and ``name[]`` to ``name``."""
    if not query or (b"access" not in query.lower() and b"%" not in query):
        return False  # fast path; percent-encoded names are decoded below
    text = query.decode("latin-1").replace(";", "&")  # ';' separates parameters for some servers
    try:
        names = {_normalised_name(name) for name, _ in parse_qsl(text, keep_blank_values=True)}
    except ValueError:
        return True
    return "access_token" in names


def _normalised_name(name: str) -> str:
    return re.sub(r"[.\s]", "_", name.split("[", 1)[0]).lower()


def _token_in_query(query: bytes, token: str) -> bool:
    """The request's own token anywhere in the query, under whatever parameter name."""
    return bool(query) and token.encode("ascii") in (unquote_to_bytes(query) if b"%" in query else query)
