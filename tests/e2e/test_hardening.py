"""Attacks where the policy and the upstream could read one request two ways.

Each test is one attack class: header spellings some upstreams fold together, method and
URL override headers, ``;`` path parameters, scope strings split on odd whitespace, lone
surrogates and malformed framing that must give 4xx (never 500), tokens hidden in the query
under other names, Mcp-* headers contradicting the body, rule paths that can never match,
per-issuer token caps, requests racing a key rotation, and lower-case methods. They run
against real servers on 127.0.0.1; request targets and header bytes are sent raw on a
socket where a client library would normalise them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from enforcer.app import EnforcerApp
from enforcer.policy.loader import PolicyLoadError, load_policy
from tests.conftest import Stack, reset, start_stack
from tests.support import (
    JWKSEndpoint,
    Recorded,
    RecordingUpstream,
    SigningKey,
    basic_policy,
    claims,
    free_port,
    jwks,
    raw_request,
    serve_enforcer,
    serving,
    sign,
    write_policy,
)

RULES = """
      - id: no-delete
        effect: deny
        methods: [DELETE]
      - id: no-admin
        effect: deny
        paths: ["/mcp/admin", "/mcp/admin/*"]
      - id: admins
        effect: allow
        scopes: [admin]
      - id: allow-agents
        effect: allow
        client_ids: ["agent-*"]
        scopes: [tools:read]
"""


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("hardening"), rules=RULES)


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    return reset(shared_stack)


def auth_header(stack: Stack, **overrides: Any) -> tuple[str, str]:
    return ("Authorization", f"Bearer {sign(stack.key, claims(**overrides))}")


def send_raw(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send ``data`` verbatim and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def nothing_forwarded_or(stack: Stack, status: int, forwarded_ok: bool, seen: object) -> None:
    """A refusal forwards nothing; a forwarded request must satisfy ``forwarded_ok``."""
    if status >= 400:
        assert stack.upstream.requests == [], "a refused request reached the upstream"
    else:
        assert forwarded_ok, f"the upstream received: {seen!r}"


# -- [medium] identity header forgery through '_' spellings -----------------------------------------


@pytest.mark.parametrize("name", ["X-Enforcer_Act", "X_Enforcer_Sub", "x-enforcer_client-id", "X_ENFORCER_SCOPE"])
def test_identity_headers_cannot_be_forged_with_underscore_spellings(stack: Stack, name: str) -> None:
    """CGI/WSGI/PHP (and nginx with underscores_in_headers) turn both ``X-Enforcer-Act`` and
    ``X-Enforcer_Act`` into ``HTTP_X_ENFORCER_ACT``. For a token without ``act`` the enforcer
    sets no ``X-Enforcer-Act``, so the forged one is the only one the upstream sees."""
    response = raw_request(stack.enforcer.port, "/mcp/tools",
                           headers=[auth_header(stack), (name, '{"sub":"root"}')])
    forwarded = stack.upstream.requests[-1].headers if stack.upstream.requests else []
    forged = [(k, v) for k, v in forwarded if k.replace("_", "-").startswith("x-enforcer-") and "_" in k]
    nothing_forwarded_or(stack, response.status, forged == [], forged)


# -- [medium] method and URL override headers -----------------------------------------------------


@pytest.mark.parametrize(("method", "path", "name", "value"), [
    pytest.param("POST", "/mcp/items", "X-HTTP-Method-Override", "DELETE", id="x-http-method-override"),
    pytest.param("POST", "/mcp/items", "X-HTTP-Method", "DELETE", id="x-http-method"),
    pytest.param("POST", "/mcp/items", "X-Method-Override", "DELETE", id="x-method-override"),
    pytest.param("GET", "/mcp/public", "X-Original-URL", "/mcp/admin/users", id="x-original-url"),
    pytest.param("GET", "/mcp/public", "X-Rewrite-URL", "/mcp/admin/users", id="x-rewrite-url"),
])
def test_method_and_url_override_headers_never_reach_the_upstream(stack: Stack, method: str, path: str,
                                                                   name: str, value: str) -> None:
    """The policy denies DELETE and /mcp/admin/*; Express method-override, Symfony, Laminas,
    IIS URL Rewrite etc. execute the method / path named in these headers instead."""
    response = raw_request(stack.enforcer.port, path, method=method, body=b"{}" if method == "POST" else b"",
                           headers=[auth_header(stack), (name, value)])
    forwarded: list[Recorded] = stack.upstream.requests
    nothing_forwarded_or(stack, response.status, all(r.header(name) is None for r in forwarded),
                         [(r.method, r.path, name, r.header(name)) for r in forwarded])


# -- [medium] ';' path parameters ------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    pytest.param(b"/mcp/admin;x/users", id="path-parameter-hides-denied-segment"),
    pytest.param(b"/mcp/admin;jsessionid=1", id="path-parameter-at-end"),
    pytest.param(b"/mcp/admin%3Bx/users", id="encoded-semicolon-forwarded-raw"),
    pytest.param(b"/mcp/x/..;/admin/users", id="tomcat-dot-dot-semicolon"),
    pytest.param(b"/mcp/..;/admin", id="tomcat-dot-dot-semicolon-out-of-prefix"),
])
def test_semicolon_path_parameters_are_refused(stack: Stack, target: bytes) -> None:
    """Tomcat/Jetty/Spring drop ``;params`` from each segment (``/admin;x/users`` is
    ``/admin/users``, ``..;`` is ``..``), so the upstream serves a path the ``no-admin`` rule
    denies, or one outside the upstream base. ``%3B`` is refused too: decoded anywhere along
    the way it becomes a delimiter."""
    response = raw_request(stack.enforcer.port, target, headers=[auth_header(stack)])
    assert response.status in (400, 403), (response.status, [r.path for r in stack.upstream.requests])
    assert stack.upstream.requests == []


# -- [low] scope claim split on non-space whitespace -------------------------------------------------


@pytest.mark.parametrize("separator", ["\u00a0", "\u2003", "\u3000", "\x85", "\x1c", "\t"])
def test_scope_claim_is_split_on_spaces_only(stack: Stack, separator: str) -> None:
    """RFC 6749 section 3.3: scope tokens are separated by %x20. ``"tools:call<NBSP>admin"`` is one
    (malformed) token, not ``admin``; the ``admins`` rule must not apply."""
    token_scope = f"tools:call{separator}admin"
    response = raw_request(stack.enforcer.port, "/mcp/anything", headers=[auth_header(stack, scope=token_scope)])
    assert response.status in (401, 403), response.body
    assert stack.upstream.requests == []


# -- [low] lone surrogates in claims -> 500 -------------------------------------------------------


@pytest.mark.parametrize("overrides", [
    pytest.param({"sub": "alice\ud800"}, id="sub"),
    pytest.param({"client_id": "agent-\udcff"}, id="client_id"),
    pytest.param({"act": {"sub": "\ud800"}}, id="act"),
    pytest.param({"scope": "tools:read \ud800"}, id="scope"),
])
def test_lone_surrogate_in_a_claim_is_an_invalid_token_not_a_500(stack: Stack, overrides: dict[str, Any]) -> None:
    """JSON ``"\\ud800"`` is not a Unicode scalar value (RFC 8259 section 8.2): such a token is
    invalid, and must never reach header encoding, where it would fail."""
    response = raw_request(stack.enforcer.port, "/mcp/tools", headers=[auth_header(stack, **overrides)])
    assert response.status == 401, (response.status, response.body)
    assert response.json()["error"] == "invalid_token"
    assert stack.upstream.requests == []


# -- [low] Content-Length with trailing whitespace -> 500 ------------------------------------------


@pytest.mark.parametrize("value", [b"5 ", b"5\t"])
def test_content_length_with_trailing_whitespace_is_not_a_500(stack: Stack, value: bytes) -> None:
    """The HTTP parser accepts ``Content-Length: 5<SP>`` and uvicorn passes the raw value on;
    aiohttp refuses it with ValueError. Either answer 400 or forward a normalised length."""
    _, token = auth_header(stack)
    raw = send_raw(stack.enforcer.port, b"POST /mcp/items HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                   + token.encode() + b"\r\nContent-Length: " + value + b"\r\nConnection: close\r\n\r\nhello")
    status = status_of(raw)
    assert status in (200, 400), raw[:200]
    seen = [(r.body, r.header("content-length")) for r in stack.upstream.requests]
    nothing_forwarded_or(stack, status, seen in ([(b"hello", "5")], [(b"hello", None)]), seen)


# -- [low] token in the query under other spellings --------------------------------------------------


@pytest.mark.parametrize("name", [
    pytest.param("ACCESS_TOKEN", id="upper-case (ASP.NET query keys are case-insensitive)"),
    pytest.param("Access_Token", id="mixed-case"),
    pytest.param("access.token", id="php-dot-becomes-underscore"),
    pytest.param("access+token", id="php-space-becomes-underscore"),
    pytest.param("access_token[]", id="php-rails-array"),
])
def test_token_in_query_under_another_spelling_is_refused_and_not_forwarded(stack: Stack, name: str) -> None:
    """The request's own access token in the query reaches the upstream (and its access logs)."""
    header = auth_header(stack)
    token = header[1].removeprefix("Bearer ")
    response = raw_request(stack.enforcer.port, f"/mcp/tools?{name}={token}", headers=[header])
    assert response.status == 400, [r.query[:40] for r in stack.upstream.requests]
    assert response.json()["error"] == "invalid_request"
    assert stack.upstream.requests == []


# -- [low] Mcp-Method / Mcp-Name contradicting the body ----------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    pytest.param("Mcp-Method", "tools/call", id="mcp-method"),
    pytest.param("Mcp-Name", "delete_all", id="mcp-name"),
])
def test_mcp_headers_that_disagree_with_the_body_are_refused(stack: Stack, name: str, value: str) -> None:
    """DESIGN.md section 4: ``Mcp-Method``/``Mcp-Name`` that disagree with the JSON-RPC body are
    400 invalid_request, never forwarded (an upstream or gateway may route on the header)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode()
    response = raw_request(stack.enforcer.port, "/mcp", method="POST", body=body,
                           headers=[auth_header(stack), ("Content-Type", "application/json"), (name, value)])
    assert response.status == 400, response.status
    assert stack.upstream.requests == []


# -- [low] rule paths that can never match ---------------------------------------------------------


@pytest.mark.parametrize("path", [
    pytest.param("/mcp/a%20b", id="percent-escape (rules see the decoded path)"),
    pytest.param("/mcp/x/../admin", id="dot-segment (refused before any rule)"),
    pytest.param("/mcp//admin", id="empty-segment (refused before any rule)"),
    pytest.param("/admin/*", id="outside-path-prefix (paths are absolute, not relative to /mcp)"),
])
def test_rule_path_that_can_never_match_is_a_load_error(tmp_path: Path, path: str) -> None:
    """A deny rule with such a path would load and silently never apply (fail open)."""
    rules = f"""
      - id: block
        effect: deny
        paths: ["{path}"]
      - id: allow-agents
        effect: allow
        client_ids: ["agent-*"]
"""
    text = basic_policy(jwks_line="jwks_uri: http://127.0.0.1:9/jwks", upstream="http://127.0.0.1:9/mcp",
                        rules=rules)
    with pytest.raises(PolicyLoadError):
        load_policy([write_policy(tmp_path, text)])


# -- [low] max_token_bytes per issuer -----------------------------------------------------------------


def test_max_token_bytes_applies_per_issuer(tmp_path: Path) -> None:
    """Issuer ``test`` caps its tokens at 1024 bytes; another issuer in the same policy (even
    one no resource uses) must not lift that cap to its own (8192 by default)."""
    key = SigningKey.generate("ES256", kid="k1")
    with serving(JWKSEndpoint(document=jwks(key))) as jwks_server, serving(RecordingUpstream()) as upstream:
        text = basic_policy(
            jwks_line=f"jwks_uri: {jwks_server.url}/jwks\n    max_token_bytes: 1024",
            upstream=f"{upstream.url}/mcp",
            extra_issuer=f"  - id: other\n    issuer: https://other.test\n    jwks_uri: {jwks_server.url}/jwks\n",
        )
        with serve_enforcer(tmp_path, text) as (_, enforcer):
            token = sign(key, claims(padding="p" * 1500))
            assert len(token) > 1024
            response = httpx.get(f"{enforcer.url}/mcp/tools", headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 401, response.status_code
            assert response.json()["error"] == "invalid_token"


# -- [low] rotation: concurrent requests during the refetch --------------------------------------------


class SlowJWKS(JWKSEndpoint):
    delay: float = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.delay:
            await asyncio.sleep(self.delay)
        await super().__call__(scope, receive, send)


def test_requests_for_a_new_kid_wait_for_the_refetch_in_flight(tmp_path: Path) -> None:
    """Requests for the new kid that arrive while its refetch is in flight wait for that refetch
    (and then verify) instead of being answered 401; still one refetch per interval."""
    old, new = SigningKey.generate("ES256", kid="k1"), SigningKey.generate("ES256", kid="k2")
    endpoint = SlowJWKS(document=jwks(old))
    with serving(endpoint) as jwks_server, serving(RecordingUpstream()) as upstream:
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream=f"{upstream.url}/mcp")
        with serve_enforcer(tmp_path, text) as (app, enforcer):
            keys = app.keys["test"]
            time.sleep(max(0.0, keys.last_attempt + 1.05 - time.monotonic()))  # refetch interval: 1 s
            endpoint.document, endpoint.delay = jwks(old, new), 0.5
            fetches_before = endpoint.fetches

            def call(_: int) -> int:
                token = sign(new, claims())
                return httpx.get(f"{enforcer.url}/mcp/tools", headers={"authorization": f"Bearer {token}"},
                                 timeout=10).status_code

            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                first = pool.submit(call, 0)
                time.sleep(0.15)  # the first request's refetch is now in flight
                rest = [pool.submit(call, i) for i in range(1, 6)]
                statuses = [first.result(), *(f.result() for f in rest)]
            assert statuses == [200] * 6
            assert endpoint.fetches - fetches_before == 1  # still one refetch per interval


# -- [low] method case: policy vs forwarded ------------------------------------------------------


def test_lower_case_method_cannot_pass_a_method_deny(tmp_path: Path) -> None:
    """uvicorn's h11 protocol passes ``delete`` through as the ASGI method; rules compare methods
    exactly and aiohttp upper-cases them, so such a method is refused before any rule runs.
    (``enforcer serve`` picks httptools, which refuses lower-case methods itself; the app does
    not depend on which parser serves it.)"""
    key = SigningKey.generate("ES256", kid="k1")
    recorder = RecordingUpstream()
    with serving(JWKSEndpoint(document=jwks(key))) as jwks_server, serving(recorder) as upstream:
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream=f"{upstream.url}/mcp",
                            rules=RULES)
        app = EnforcerApp(load_policy([write_policy(tmp_path, text)]))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http="h11", lifespan="on",
                                               log_level="warning", access_log=False))
        thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.01)
            token = sign(key, claims())
            raw = send_raw(port, b"delete /mcp/items/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                           + token.encode() + b"\r\nConnection: close\r\n\r\n")
            assert [r.method for r in recorder.requests] == [], (raw[:40], "the upstream ran DELETE")
            assert status_of(raw) in (400, 403, 405, 501)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
