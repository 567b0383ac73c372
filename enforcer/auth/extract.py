"""Find the one bearer token of a request (RFC 6750 section 2.1, header only).

The MCP specification forbids tokens in the query string and RFC 6750 forbids sending
more than one credential, so both are malformed requests (400), never "no token".
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from enforcer.context import RequestInfo
from enforcer.errors import InvalidRequest, MissingToken

#: RFC 6750 b64token, one credential after a single space.
_BEARER = re.compile(rb"^([A-Za-z]+) ([A-Za-z0-9\-._~+/]+=*)\Z")  # \Z: "$" would allow a final newline
MAX_AUTHORIZATION_BYTES = 16384


def bearer_token(request: RequestInfo) -> str:
    """Return the token, or raise ``MissingToken`` / ``InvalidRequest``."""
    if _token_in_query(request.query_string):
        raise InvalidRequest("send the access token in the Authorization header, never in the query string")
    values = request.header_values(b"authorization")
    if len(values) > 1:
        raise InvalidRequest("send exactly one Authorization header")
    if not values:
        raise MissingToken("this resource needs an access token: send Authorization: Bearer <token>")
    value = values[0]
    if len(value) > MAX_AUTHORIZATION_BYTES:
        raise InvalidRequest(f"the Authorization header is larger than {MAX_AUTHORIZATION_BYTES} bytes")
    scheme, _, _ = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        raise MissingToken("this resource accepts only the Bearer scheme: send Authorization: Bearer <token>")
    match = _BEARER.match(value)
    if match is None:
        raise InvalidRequest("malformed Authorization header: expected 'Bearer' then one token after a space")
    return match.group(2).decode("ascii")


def _token_in_query(query: bytes) -> bool:
    if not query or (b"access_token" not in query and b"%" not in query):
        return False  # fast path; a percent-encoded name ("access%5Ftoken") is decoded below
    try:
        # ';' is a parameter separator for some servers: treat it as one here too
        text = query.decode("latin-1").replace(";", "&")
        names = {name for name, _ in parse_qsl(text, keep_blank_values=True)}
    except ValueError:
        return True
    return "access_token" in names
