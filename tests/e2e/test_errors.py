"""Refusals end to end: status, WWW-Authenticate challenge and JSON body (DESIGN.md section 4).

Test ids name the STANDARDS.md requirement they check (BT-* RFC 6750, PR-* RFC 9728,
MCP-* MCP authorization). Every refusal is checked for the same body shape: small JSON
with ``error``, ``error_description``, ``reason`` and ``rule`` only when a rule decided,
no stack trace, no token, no upstream detail; and nothing reaches the upstream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import Stack, reset, start_stack
from tests.support import RESOURCE, claims, raw_request, sign

METADATA_URL = "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"
RULE_SCOPES = ["tools:read", "tools:call"]
RULES = """
      - id: block-mallory
        effect: deny
        subjects: ["mallory"]
      - id: call-tools
        effect: allow
        client_ids: ["agent-*"]
        scopes: [tools:read, tools:call]
"""
BODY_KEYS = {"error", "error_description", "reason", "rule", "scope"}
_AUTH_PARAM = re.compile(r'([A-Za-z_]+)="([^"\\]*)"')


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("errors"), rules=RULES)


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    return reset(shared_stack)


def parse_challenge(value: str) -> dict[str, str]:
    """``Bearer k="v", k2="v2"`` -> params; each param at most once, values quoted (BT-07)."""
    scheme, _, rest = value.partition(" ")
    assert scheme == "Bearer", value
    pairs = _AUTH_PARAM.findall(rest)
    assert ", ".join(f'{k}="{v}"' for k, v in pairs) == rest, f"not a clean auth-param list: {value!r}"
    names = [k for k, _ in pairs]
    assert len(names) == len(set(names)), f"repeated auth-param: {value!r}"
    return dict(pairs)


@dataclass(frozen=True)
class Case:
    """One refusal. ``authorization`` values are templates: ``{token}`` is a token signed
    with ``token_claims`` applied to the default claims."""

    status: int
    error: str
    reason: str
    path: str = "/mcp/tools"
    method: str = "GET"
    authorization: tuple[str, ...] = ("Bearer {token}",)
    token_claims: dict[str, Any] = field(default_factory=dict)
    rule: str | None = None
    challenge: dict[str, str] | None = None  # expected auth-params (exact), None: not checked
    no_challenge: bool = False


CASES = [
    pytest.param(Case(400, "invalid_request", "invalid_request", authorization=("Bearer {token}", "Bearer {token}"),
                      challenge={"error": "invalid_request", "resource_metadata": METADATA_URL}),
                 id="BT-04-two-authorization-headers"),
    pytest.param(Case(400, "invalid_request", "invalid_request", authorization=("Bearer {token}", "Basic YTpi")),
                 id="BT-02-two-credentials-bearer-and-basic"),
    pytest.param(Case(400, "invalid_request", "invalid_request", path="/mcp/tools?access_token={token}",
                      authorization=()),
                 id="BT-03-MCP-16-token-in-query"),
    pytest.param(Case(400, "invalid_request", "invalid_request", path="/mcp/tools?x=1&access_token="),
                 id="BT-02-MCP-16-token-in-header-and-empty-query-parameter"),
    pytest.param(Case(400, "invalid_request", "invalid_request", path="/mcp/tools?access_token={token}"),
                 id="BT-02-token-in-header-and-query"),
    pytest.param(Case(400, "invalid_request", "invalid_request", authorization=("Bearer {token} extra",)),
                 id="BT-01-BT-08-two-credentials-in-one-header"),
    pytest.param(Case(400, "invalid_request", "invalid_request", authorization=("Bearer  {token}",)),
                 id="BT-01-BT-08-two-spaces"),
    pytest.param(Case(401, "missing_token", "missing_token", authorization=(),
                      challenge={"resource_metadata": METADATA_URL, "scope": " ".join(RULE_SCOPES)}),
                 id="BT-06-MCP-03-PR-11-no-token"),
    pytest.param(Case(401, "missing_token", "missing_token", method="DELETE", authorization=(),
                      challenge={"resource_metadata": METADATA_URL, "scope": " ".join(RULE_SCOPES)}),
                 id="MCP-15-no-token-on-delete"),
    pytest.param(Case(401, "missing_token", "missing_token", authorization=("Basic YWxpY2U6c2VjcmV0",),
                      challenge={"resource_metadata": METADATA_URL, "scope": " ".join(RULE_SCOPES)}),
                 id="BT-05-BT-06-other-scheme-only"),
    pytest.param(Case(401, "invalid_token", "invalid_token", authorization=("Bearer abc.def",)),
                 id="BT-09-not-a-compact-jws"),
    pytest.param(Case(401, "invalid_token", "invalid_token", token_claims={"exp": 1_000_000, "iat": 999_000}),
                 id="BT-09-MCP-11-expired"),
    pytest.param(Case(401, "invalid_token", "invalid_token", token_claims={"aud": "https://other.example/mcp"}),
                 id="MCP-09-wrong-audience"),
    pytest.param(Case(401, "invalid_token", "invalid_token", token_claims={"iss": "https://evil.example"}),
                 id="BT-09-unknown-issuer"),
    pytest.param(Case(403, "insufficient_scope", "insufficient_scope", token_claims={"scope": "tools:read"},
                      rule="call-tools",
                      challenge={"error": "insufficient_scope", "scope": " ".join(RULE_SCOPES),
                                 "resource_metadata": METADATA_URL}),
                 id="BT-10-MCP-18-MCP-19-insufficient-scope-lists-every-scope"),
    pytest.param(Case(403, "insufficient_scope", "insufficient_scope", token_claims={"scope": None},
                      rule="call-tools",
                      challenge={"error": "insufficient_scope", "scope": " ".join(RULE_SCOPES),
                                 "resource_metadata": METADATA_URL}),
                 id="BT-10-MCP-18-no-scope-claim"),
    pytest.param(Case(403, "access_denied", "denied_by_rule", token_claims={"sub": "mallory"}, rule="block-mallory",
                      challenge={"error": "access_denied", "resource_metadata": METADATA_URL}),
                 id="MCP-17-policy-deny-names-the-rule"),
    pytest.param(Case(403, "access_denied", "no_matching_rule", token_claims={"client_id": "stranger"},
                      challenge={"error": "access_denied", "resource_metadata": METADATA_URL}),
                 id="MCP-17-default-deny-no-matching-rule"),
    pytest.param(Case(404, "no_route", "no_route", path="/mcpx", no_challenge=True), id="no-route"),
]


def send(stack: Stack, case: Case) -> tuple[Any, str]:
    token = sign(stack.key, claims(**case.token_claims))
    headers = [("Authorization", value.format(token=token)) for value in case.authorization]
    return raw_request(stack.enforcer.port, case.path.format(token=token), method=case.method, headers=headers), token


@pytest.mark.parametrize("case", CASES)
def test_refusal(stack: Stack, case: Case) -> None:
    response, token = send(stack, case)
    assert response.status == case.status, response.body
    body = response.json()
    assert body["error"] == case.error
    assert body["reason"] == case.reason
    if case.rule is None:
        assert "rule" not in body
    else:
        assert body["rule"] == case.rule
    if case.challenge is not None:
        values = response.header_values("www-authenticate")
        assert len(values) == 1, values
        params = parse_challenge(values[0])
        params.pop("error_description", None)
        assert params == case.challenge
    if case.no_challenge:
        assert response.header("www-authenticate") is None
    assert stack.upstream.requests == []


@pytest.mark.parametrize("case", CASES)
def test_error_body_is_small_json_without_internals(stack: Stack, case: Case) -> None:
    response, token = send(stack, case)
    assert response.header("content-type") == "application/json"
    assert response.header("cache-control") == "no-store"
    assert len(response.body) < 600
    body = response.json()
    assert isinstance(body, dict) and set(body) <= BODY_KEYS and body.keys() >= {"error", "error_description"}
    assert all(isinstance(v, str) for v in body.values())
    text = response.body.decode() + "".join(response.header_values("www-authenticate"))
    for leak in ("Traceback", 'File "', "Error(", token, token.split(".")[2], str(stack.upstream_server.port),
                 str(stack.jwks_server.port), "/jwks", stack.key.kid):
        assert leak not in text, leak
    assert stack.upstream.requests == []


@pytest.mark.parametrize("forged", [
    pytest.param({"Host": "evil.example"}, id="host"),
    pytest.param({"Host": "evil.example:443", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
                 id="host-and-x-forwarded"),
    pytest.param({"Forwarded": 'host="evil.example";proto=https', "X-Forwarded-Prefix": "/evil"}, id="forwarded"),
])
def test_PR_09_PR_12_challenge_url_comes_from_the_configured_resource(stack: Stack, forged: dict[str, str]) -> None:
    response = stack.client.get("/mcp/tools", headers=forged)
    assert response.status_code == 401
    params = parse_challenge(response.headers["www-authenticate"])
    assert "error" not in params  # BT-06: no credentials, no error code
    assert params["resource_metadata"] == METADATA_URL
    assert RESOURCE == "http://127.0.0.1:8080/mcp"  # the URL above is derived from this identifier
    assert stack.upstream.requests == []


def test_MCP_18_insufficient_scope_challenge_has_metadata_for_forged_host_too(stack: Stack) -> None:
    token = sign(stack.key, claims(scope="tools:read"))
    response = stack.client.get("/mcp/tools", headers={"authorization": f"Bearer {token}", "host": "evil.example",
                                                       "x-forwarded-host": "evil.example"})
    assert response.status_code == 403
    params = parse_challenge(response.headers["www-authenticate"])
    assert params["resource_metadata"] == METADATA_URL
    assert params["scope"].split(" ") == RULE_SCOPES


def test_BT_09_invalid_token_challenge_carries_error_and_description(stack: Stack) -> None:
    token = sign(stack.key, claims(aud="https://other.example/mcp"))
    response = stack.client.get("/mcp/tools", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401
    params = parse_challenge(response.headers["www-authenticate"])
    assert params["error"] == "invalid_token"
    assert params["error_description"]
    assert params["resource_metadata"] == METADATA_URL


def test_allowed_request_with_every_scope_passes(stack: Stack) -> None:
    # the counterpart of the refusals above: the same stack lets a complete request through
    token = sign(stack.key, claims(scope="tools:call tools:read"))
    response = stack.client.get("/mcp/tools", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert len(stack.upstream.requests) == 1


def test_websocket_upgrade_is_refused_and_never_forwarded(stack):
    """A WebSocket handshake is not a request the enforcer can authorise: it is refused (fail closed)."""
    import base64
    import os
    import socket

    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /mcp/ws HTTP/1.1\r\nHost: 127.0.0.1:{stack.enforcer.port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", stack.enforcer.port), timeout=5) as sock:
        sock.sendall(request.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 403"), status_line
    assert stack.upstream.requests == []
