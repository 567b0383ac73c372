"""Ambiguous request paths are refused with 400 and never reach the upstream (DESIGN.md section 1, stage 3).

An encoded slash or backslash, a NUL, a double-encoded escape, a dot or empty segment
would let the policy and the upstream read the same bytes as two different paths. Every
row is sent as raw bytes on a socket, so the request target on the wire is exactly the
row (no client-side normalisation of ``..`` or re-encoding).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Stack, reset, start_stack
from tests.support import RawResponse, claims, raw_request, sign

AMBIGUOUS = [
    # encoded separators: the upstream may decode them into a different path than the rules saw
    pytest.param(b"/mcp/a%2Fb", id="encoded-slash-upper"),
    pytest.param(b"/mcp/a%2fb", id="encoded-slash-lower"),
    pytest.param(b"/mcp%2Fadmin", id="encoded-slash-in-prefix"),
    pytest.param(b"/mcp/a%5Cb", id="encoded-backslash-upper"),
    pytest.param(b"/mcp/a%5cb", id="encoded-backslash-lower"),
    pytest.param(b"/mcp/a\\b", id="raw-backslash"),
    pytest.param(b"/mcp\\..\\admin", id="raw-backslash-dot-dot"),
    # NUL and other control characters
    pytest.param(b"/mcp/a%00b", id="encoded-nul"),
    pytest.param(b"/mcp/a%00", id="encoded-nul-at-end"),
    pytest.param(b"/mcp/a%0Ab", id="encoded-newline"),
    pytest.param(b"/mcp/a%0d%0aX-Injected:%201", id="encoded-crlf"),
    pytest.param(b"/mcp/a%7Fb", id="encoded-del"),
    # double encoding: decoded once here, once more upstream
    pytest.param(b"/mcp/a%252Fb", id="double-encoded-slash"),
    pytest.param(b"/mcp/%252e%252e/admin", id="double-encoded-dot-dot"),
    pytest.param(b"/mcp/a%25", id="encoded-percent"),
    # dot segments, plain and encoded
    pytest.param(b"/mcp/../admin", id="dot-dot"),
    pytest.param(b"/mcp/..", id="dot-dot-at-end"),
    pytest.param(b"/mcp/x/../../admin", id="dot-dot-twice"),
    pytest.param(b"/other/../mcp/tools", id="dot-dot-into-the-prefix"),
    pytest.param(b"/mcp/./x", id="dot"),
    pytest.param(b"/mcp/.", id="dot-at-end"),
    pytest.param(b"/mcp/%2e%2e/x", id="encoded-dot-dot-lower"),
    pytest.param(b"/mcp/%2E%2E/x", id="encoded-dot-dot-upper"),
    pytest.param(b"/mcp/.%2e/x", id="half-encoded-dot-dot"),
    pytest.param(b"/mcp/%2e/x", id="encoded-dot"),
    # empty segments
    pytest.param(b"/mcp//x", id="double-slash"),
    pytest.param(b"//mcp/x", id="leading-double-slash"),
    pytest.param(b"/mcp///", id="triple-slash"),
    # malformed escapes and targets that are not an absolute path
    pytest.param(b"/mcp/a%zzb", id="bad-hex-escape"),
    pytest.param(b"/mcp/a%2", id="truncated-escape"),
    pytest.param(b"/mcp/%C3%28", id="invalid-utf8"),
    pytest.param(b"*", id="asterisk-form"),
    pytest.param(b"http://127.0.0.1:8080/mcp/../admin", id="absolute-form-dot-dot"),
]

NO_TOKEN_ROWS = {"encoded-slash-upper", "encoded-backslash-lower", "encoded-nul", "double-encoded-slash", "dot-dot",
                 "encoded-dot-dot-lower", "double-slash", "raw-backslash"}


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("paths"))


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    return reset(shared_stack)


def assert_invalid_request(response: RawResponse) -> None:
    assert response.status == 400, response.body
    assert response.header("content-type") == "application/json"
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["reason"] == "invalid_request"
    assert "rule" not in body


@pytest.mark.parametrize("target", AMBIGUOUS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_ambiguous_path_is_400_and_never_forwarded(stack: Stack, target: bytes, method: str) -> None:
    token = sign(stack.key, claims())
    response = raw_request(stack.enforcer.port, target, method=method, headers=[("Authorization", f"Bearer {token}")],
                           body=b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}' if method == "POST" else b"")
    assert_invalid_request(response)
    assert stack.upstream.requests == []


@pytest.mark.parametrize("target", [p for p in AMBIGUOUS if p.id in NO_TOKEN_ROWS])
def test_ambiguous_path_is_refused_before_the_token_is_looked_at(stack: Stack, target: bytes) -> None:
    response = raw_request(stack.enforcer.port, target)
    assert_invalid_request(response)
    assert stack.upstream.requests == []


@pytest.mark.parametrize(("target", "upstream_path"), [
    pytest.param(b"/mcp/a.b", "/mcp/a.b", id="dot-inside-segment"),
    pytest.param(b"/mcp/..a", "/mcp/..a", id="dots-then-text"),
    pytest.param(b"/mcp/a%2Eb", "/mcp/a.b", id="encoded-dot-inside-segment"),
    pytest.param(b"/mcp/%41", "/mcp/A", id="encoded-letter"),
    pytest.param(b"/mcp/a%20b", "/mcp/a b", id="encoded-space"),
    pytest.param(b"/mcp/", "/mcp/", id="trailing-slash"),
])
def test_unambiguous_lookalikes_are_forwarded(stack: Stack, target: bytes, upstream_path: str) -> None:
    token = sign(stack.key, claims())
    response = raw_request(stack.enforcer.port, target, headers=[("Authorization", f"Bearer {token}")])
    assert response.status == 200, response.body
    assert [r.path for r in stack.upstream.requests] == [upstream_path]
