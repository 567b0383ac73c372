"""Stage 4, finding the bearer token: RFC 6750 section 2.1 only (STANDARDS.md section 3,
BT-01..BT-04, MCP-16). ``RequestInfo`` is built by hand, the way the ASGI edge builds it
(header names lower-cased, values as raw bytes, in arrival order)."""

from __future__ import annotations

import pytest

from enforcer.auth.extract import MAX_AUTHORIZATION_BYTES, bearer_token
from enforcer.context import RequestInfo
from enforcer.errors import InvalidRequest, MissingToken

TOKEN = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def request(*authorization: bytes, query: bytes = b"", other: tuple[tuple[bytes, bytes], ...] = ()) -> RequestInfo:
    headers = ((b"host", b"127.0.0.1:8080"), *other, *((b"authorization", v) for v in authorization))
    return RequestInfo(method="GET", raw_path=b"/mcp", query_string=query, headers=headers)


ACCEPTED = [
    pytest.param(request(b"Bearer " + TOKEN), TOKEN, id="BT-01-bearer"),
    pytest.param(request(b"bearer " + TOKEN), TOKEN, id="BT-01-scheme-lowercase"),
    pytest.param(request(b"BEARER " + TOKEN), TOKEN, id="BT-01-scheme-uppercase"),
    pytest.param(request(b"BeArEr " + TOKEN), TOKEN, id="BT-01-scheme-mixed-case"),
    pytest.param(request(b"Bearer aZ09-._~+/=="), b"aZ09-._~+/==", id="BT-01-b64token-full-alphabet"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"q=access_token"), TOKEN, id="BT-03-access-token-as-value-only"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"my_access_token=1"), TOKEN, id="BT-03-longer-parameter-name"),
    pytest.param(request(b"Bearer " + TOKEN, other=((b"x-authorization", b"Bearer other"),)), TOKEN,
                 id="BT-04-other-header-names-ignored"),
    pytest.param(request(b"Bearer " + b"a" * (MAX_AUTHORIZATION_BYTES - 7)), b"a" * (MAX_AUTHORIZATION_BYTES - 7),
                 id="JA-13-header-exactly-at-cap"),
]

REFUSED = [
    pytest.param(request(), MissingToken, id="BT-06-missing-header"),
    pytest.param(request(b""), MissingToken, id="BT-06-empty-header"),
    pytest.param(request(b"Basic dXNlcjpwYXNz"), MissingToken, id="BT-01-basic-scheme"),
    pytest.param(request(b"DPoP " + TOKEN), MissingToken, id="BT-01-dpop-scheme-not-enabled"),
    pytest.param(request(b"Bearertoken " + TOKEN), MissingToken, id="BT-01-scheme-prefix-of-other-word"),
    pytest.param(request(b"Bearer " + TOKEN, b"Bearer " + TOKEN), InvalidRequest, id="BT-04-two-identical-headers"),
    pytest.param(request(b"Bearer " + TOKEN, b"Bearer other"), InvalidRequest, id="BT-04-two-different-headers"),
    pytest.param(request(b"Bearer " + TOKEN, b""), InvalidRequest, id="BT-04-second-header-empty"),
    pytest.param(request(b"Basic dXNlcjpwYXNz", b"Bearer " + TOKEN), InvalidRequest, id="BT-04-basic-and-bearer"),
    pytest.param(request(b"Bearer " + TOKEN + b", Bearer other"), InvalidRequest,
                 id="BT-04-two-credentials-one-header"),
    pytest.param(request(query=b"access_token=" + TOKEN), InvalidRequest, id="BT-03-MCP-16-query-token-only"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"access_token=" + TOKEN), InvalidRequest,
                 id="BT-02-MCP-16-query-and-header"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"x=1&access_token="), InvalidRequest,
                 id="BT-03-MCP-16-query-blank-value"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"access_token"), InvalidRequest,
                 id="BT-03-MCP-16-query-name-without-equals"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"a=1&access_token=x"), InvalidRequest,
                 id="BT-03-MCP-16-query-after-other-parameter"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"a=1;access_token=x"), InvalidRequest,
                 id="BT-03-semicolon-separated-query-token"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"access%5Ftoken=" + TOKEN), InvalidRequest,
                 id="BT-03-MCP-16-query-percent-encoded-name"),
    pytest.param(request(b"Bearer " + TOKEN, query=b"%61ccess_token=" + TOKEN), InvalidRequest,
                 id="BT-03-MCP-16-query-percent-encoded-letter"),
    pytest.param(request(b"Bearer"), InvalidRequest, id="BT-01-scheme-without-token"),
    pytest.param(request(b"Bearer "), InvalidRequest, id="BT-01-scheme-and-space-without-token"),
    pytest.param(request(b"Bearer  " + TOKEN), InvalidRequest, id="BT-01-two-spaces"),
    pytest.param(request(b"Bearer " + TOKEN + b" junk"), InvalidRequest, id="BT-01-trailing-junk"),
    pytest.param(request(b"Bearer " + TOKEN + b" "), InvalidRequest, id="BT-01-trailing-space"),
    pytest.param(request(b"Bearer " + TOKEN + b"\n"), InvalidRequest, id="BT-01-trailing-newline"),
    pytest.param(request(b"Bearer " + TOKEN + b"=x"), InvalidRequest, id="BT-01-characters-after-padding"),
    pytest.param(request(b"Bearer a=b"), InvalidRequest, id="BT-01-padding-inside"),
    pytest.param(request(b'Bearer {"payload":"x"}'), InvalidRequest, id="BT-01-JB-10-json-serialization"),
    pytest.param(request(b"Bearer tok\xc3\xa9n"), InvalidRequest, id="BT-01-non-ascii"),
    pytest.param(request(b"Bearer " + b"a" * MAX_AUTHORIZATION_BYTES), InvalidRequest, id="JA-13-oversize-header"),
    pytest.param(request(b"Basic " + b"a" * MAX_AUTHORIZATION_BYTES), InvalidRequest,
                 id="JA-13-oversize-header-other-scheme"),
]


@pytest.mark.parametrize(("req", "expected"), ACCEPTED)
def test_BT_01_bearer_token_accepted(req: RequestInfo, expected: bytes):
    assert bearer_token(req) == expected.decode("ascii")


@pytest.mark.parametrize(("req", "error"), REFUSED)
def test_BT_01_to_BT_04_bearer_token_refused(req: RequestInfo, error: type[Exception]):
    with pytest.raises(error) as caught:
        bearer_token(req)
    assert type(caught.value) is error  # InvalidRequest and MissingToken are not interchangeable
    assert TOKEN.decode() not in caught.value.description
    if error is InvalidRequest:
        assert (caught.value.status, caught.value.error) == (400, "invalid_request")
    else:
        assert caught.value.status == 401 and caught.value.challenge_params() == []  # BT-06: no error code
