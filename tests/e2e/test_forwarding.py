"""What the upstream receives, and what comes back, through real servers (DESIGN.md sections 1 and 4).

Stage 10: hop-by-hop and ``Connection``-named headers are stripped both ways, inbound
``X-Enforcer-*`` are replaced from verified claims only, the token stays behind unless
``forward_token: true`` (MCP-14), ``X-Forwarded-*`` come from the configured resource,
bodies stream, status codes and query strings pass through untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from tests.conftest import Stack, reset
from tests.support import (
    JWKSEndpoint,
    RecordingUpstream,
    SigningKey,
    basic_policy,
    claims,
    jwks,
    raw_request,
    serve_enforcer,
    serving,
    sign,
)


def served_stack(directory: Path, extra_resource: str = "") -> Iterator[Stack]:
    """Like ``start_stack``, but the enforcer is served as ``enforcer serve`` serves it
    (uvicorn's proxy_headers off), which X-Forwarded-For handling depends on."""
    key = SigningKey.generate("ES256", kid="k1")
    endpoint = JWKSEndpoint(document=jwks(key))
    upstream = RecordingUpstream()
    with serving(endpoint) as jwks_server, serving(upstream) as upstream_server:
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream=f"{upstream_server.url}/mcp",
                            extra_resource=extra_resource)
        with serve_enforcer(directory, text) as (app, enforcer), \
                httpx.Client(base_url=enforcer.url, timeout=10) as client:
            yield Stack(key, endpoint, jwks_server, upstream, upstream_server, app, enforcer, client)


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from served_stack(tmp_path_factory.mktemp("forwarding"))


@pytest.fixture
def stack(shared_stack: Stack) -> Iterator[Stack]:
    yield reset(shared_stack)
    reset(shared_stack)


@pytest.fixture(scope="module")
def token_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from served_stack(tmp_path_factory.mktemp("forward-token"), extra_resource="    forward_token: true")


def bearer(stack: Stack, **overrides: object) -> dict[str, str]:
    return {"authorization": f"Bearer {sign(stack.key, claims(**overrides))}"}


def values_of(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key == name]


# -- request headers -------------------------------------------------------------------------


def test_hop_by_hop_and_connection_named_request_headers_are_stripped(stack: Stack) -> None:
    headers = [
        *bearer(stack).items(),
        ("Connection", "keep-alive, X-Hop-Custom, X-API-VERSION"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic c2VjcmV0OnNlY3JldA=="),
        ("Proxy-Connection", "keep-alive"),
        ("X-Hop-Custom", "must not pass"),
        ("x-api-version", "named in Connection, so hop-by-hop"),
        ("X-End-To-End", "kept"),
    ]
    response = stack.client.get("/mcp/tools", headers=headers)
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    for name in ("keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection",
                 "x-hop-custom", "x-api-version"):
        assert seen.header(name) is None, name
    for value in values_of(seen.headers, "connection"):  # the forwarding client may add its own
        assert "x-hop-custom" not in value.lower() and "x-api-version" not in value.lower()
    assert seen.header("x-end-to-end") == "kept"


def test_headers_named_in_several_connection_headers_are_all_stripped(stack: Stack) -> None:
    token = bearer(stack)["authorization"]
    response = raw_request(stack.enforcer.port, "/mcp/tools", headers=[
        ("Authorization", token), ("Connection", "X-Hop-A"), ("Connection", "x-hop-b"),
        ("X-Hop-A", "1"), ("X-HOP-B", "2"), ("X-Keep", "3")])
    assert response.status == 200, response.body
    seen = stack.upstream.requests[-1]
    assert seen.header("x-hop-a") is None and seen.header("x-hop-b") is None
    assert seen.header("x-keep") == "3"


def test_inbound_x_enforcer_headers_are_replaced_from_verified_claims(stack: Stack) -> None:
    forged = [
        ("X-Enforcer-Sub", "mallory"),
        ("x-enforcer-client-id", "admin-console"),
        ("X-ENFORCER-SCOPE", "admin:all"),
        ("X-Enforcer-Act", '{"sub":"root"}'),
        ("X-eNfOrCeR-Anything", "forged"),
    ]
    response = stack.client.get("/mcp/tools", headers=[*bearer(stack).items(), *forged])
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    enforcer_headers = sorted((k, v) for k, v in seen.headers if k.startswith("x-enforcer-"))
    assert enforcer_headers == [
        ("x-enforcer-client-id", "agent-42"),
        ("x-enforcer-scope", "tools:call tools:read"),
        ("x-enforcer-sub", "alice"),
    ]


def test_act_claim_is_forwarded_as_compact_json(stack: Stack) -> None:
    act = {"sub": "planner", "act": {"sub": "user-agent"}}
    response = stack.client.get("/mcp/tools", headers=[*bearer(stack, act=act).items(),
                                                       ("X-Enforcer-Act", '{"sub":"forged"}')])
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    assert values_of(seen.headers, "x-enforcer-act") == ['{"sub":"planner","act":{"sub":"user-agent"}}']


@pytest.mark.parametrize(("claim_overrides", "header", "expected"), [
    pytest.param({"sub": "José 日本 100%"}, "x-enforcer-sub", "Jos%C3%A9 %E6%97%A5%E6%9C%AC 100%25", id="sub-utf8"),
    pytest.param({"sub": "eve\u2028X-Enforcer-Sub: root"}, "x-enforcer-sub", "eve%E2%80%A8X-Enforcer-Sub: root",
                 id="sub-unicode-line-separator"),
    pytest.param({"sub": "eve\u0085x"}, "x-enforcer-sub", "eve%C2%85x", id="sub-c1-next-line"),
    pytest.param({"client_id": "agent-ü"}, "x-enforcer-client-id", "agent-%C3%BC", id="client-id-utf8"),
    pytest.param({"act": {"sub": "bob-é"}}, "x-enforcer-act", '{"sub":"bob-%C3%A9"}', id="act-utf8"),
])
def test_non_ascii_claim_values_are_percent_encoded(stack: Stack, claim_overrides: dict[str, object],
                                                     header: str, expected: str) -> None:
    response = stack.client.get("/mcp/tools", headers=bearer(stack, **claim_overrides))
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    assert values_of(seen.headers, header) == [expected]
    original = claim_overrides.get("sub") or claim_overrides.get("client_id")
    if original is not None:
        assert unquote(expected) == original  # reversible: '%' itself is encoded


SIGNATURE_HEADERS = {"signature-input": 'sig1=("@method");created=1', "signature": "sig1=:AAAA:"}


def test_authorization_is_not_forwarded_by_default(stack: Stack) -> None:
    # nor a request signature (on a resource that does not check one, it is just another credential)
    response = stack.client.get("/mcp/tools", headers={**bearer(stack), **SIGNATURE_HEADERS})
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    assert seen.header("authorization") is None
    assert seen.header("signature") is None and seen.header("signature-input") is None
    assert not any(value.startswith("Bearer ") or "eyJ" in value for _, value in seen.headers)


def test_authorization_is_forwarded_with_forward_token(token_stack: Stack) -> None:
    token_stack.upstream.requests.clear()
    token = sign(token_stack.key, claims())
    response = token_stack.client.get("/mcp/tools", headers={"authorization": f"Bearer {token}",
                                                             **SIGNATURE_HEADERS})
    assert response.status_code == 200, response.text
    seen = token_stack.upstream.requests[-1]
    assert values_of(seen.headers, "authorization") == [f"Bearer {token}"]
    assert seen.header("signature-input") == SIGNATURE_HEADERS["signature-input"]
    assert seen.header("x-enforcer-sub") == "alice"


@pytest.mark.parametrize("inbound", [
    pytest.param({}, id="nothing-inbound"),
    pytest.param({"host": "evil.example", "x-forwarded-host": "evil.example", "x-forwarded-proto": "https",
                  "forwarded": "for=6.6.6.6;host=evil.example;proto=https"}, id="forged-host-and-forwarding"),
])
def test_x_forwarded_headers_come_from_the_configured_resource(stack: Stack, inbound: dict[str, str]) -> None:
    response = stack.client.get("/mcp/tools", headers={**bearer(stack), **inbound})
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    assert values_of(seen.headers, "x-forwarded-proto") == ["http"]  # RESOURCE is http://127.0.0.1:8080/mcp
    assert values_of(seen.headers, "x-forwarded-host") == ["127.0.0.1:8080"]
    assert values_of(seen.headers, "x-forwarded-for") == ["127.0.0.1"]
    assert seen.header("forwarded") is None
    assert values_of(seen.headers, "host") == [f"127.0.0.1:{stack.upstream_server.port}"]


def test_x_forwarded_for_appends_the_peer_to_the_inbound_chain(stack: Stack) -> None:
    response = stack.client.get("/mcp/tools", headers={**bearer(stack), "x-forwarded-for": "10.0.0.7"})
    assert response.status_code == 200, response.text
    assert values_of(stack.upstream.requests[-1].headers, "x-forwarded-for") == ["10.0.0.7, 127.0.0.1"]


# -- bodies ----------------------------------------------------------------------------------


def test_large_post_body_arrives_intact(stack: Stack) -> None:
    body = os.urandom(5 * 1024 * 1024 + 17)
    response = stack.client.post("/mcp/upload", headers={**bearer(stack), "content-type": "application/octet-stream"},
                                 content=body)
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    assert seen.method == "POST"
    assert len(seen.body) == len(body)
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(body).digest()
    assert seen.header("content-type") == "application/octet-stream"


def test_chunked_upload_arrives_intact(stack: Stack) -> None:
    chunks = [os.urandom(n) for n in (1, 100, 65536, 3, 300_000)]

    def generate() -> Iterator[bytes]:
        yield from chunks

    response = stack.client.put("/mcp/upload", headers=bearer(stack), content=generate())
    assert response.status_code == 200, response.text
    seen = stack.upstream.requests[-1]
    assert seen.method == "PUT"
    assert seen.body == b"".join(chunks)


class FirstChunkProbe:
    """An upstream that notes when the first body bytes arrive, then reads the rest
    (or notes that the enforcer hung up before the body was complete)."""

    def __init__(self) -> None:
        self.first_chunk = threading.Event()
        self.disconnected = threading.Event()
        self.disconnected_at = 0.0
        self.body = b""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected_at = time.monotonic()
                self.disconnected.set()
                return
            self.body += message.get("body", b"")
            if self.body:
                self.first_chunk.set()
            if not message.get("more_body"):
                break
        payload = json.dumps({"length": len(self.body)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


@contextmanager
def in_front_of(directory: Path, upstream_app: object) -> Iterator[tuple[SigningKey, str]]:
    """An enforcer (and its JWKS endpoint) in front of ``upstream_app``: its key and URL."""
    key = SigningKey.generate("ES256", kid="k1")
    with serving(JWKSEndpoint(document=jwks(key))) as jwks_server, serving(upstream_app) as upstream:
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream=f"{upstream.url}/mcp")
        with serve_enforcer(directory, text) as (_, enforcer):
            yield key, enforcer.url


def test_request_body_is_streamed_not_buffered(tmp_path: Path) -> None:
    probe = FirstChunkProbe()
    arrived_early: list[bool] = []

    def generate() -> Iterator[bytes]:
        yield b"first-part;"
        # The rest is only sent once the upstream has seen the first part: a buffering
        # proxy would wait for the whole body and the upstream would see nothing.
        arrived_early.append(probe.first_chunk.wait(timeout=5))
        yield b"second-part"

    with in_front_of(tmp_path, probe) as (key, url):
        response = httpx.post(f"{url}/mcp/upload", headers={"authorization": f"Bearer {sign(key, claims())}"},
                              content=generate(), timeout=10)
    assert response.status_code == 200, response.text
    assert arrived_early == [True]
    assert probe.body == b"first-part;second-part"


def test_client_abandoning_an_upload_aborts_the_upstream_request(tmp_path: Path) -> None:
    probe = FirstChunkProbe()
    with in_front_of(tmp_path, probe) as (key, url):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(f"POST /mcp/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                         f"{sign(key, claims())}\r\nContent-Length: 1000000\r\n\r\n".encode() + b"x" * 100_000)
            assert probe.first_chunk.wait(timeout=5)
        hung_up = time.monotonic()  # 900 kB short
        assert probe.disconnected.wait(timeout=3), "the upstream request was not aborted"
    assert probe.disconnected_at - hung_up < 2
    assert len(probe.body) < 1_000_000


# -- responses -------------------------------------------------------------------------------


def test_response_headers_pass_back_minus_hop_by_hop(stack: Stack) -> None:
    async def answer(send, record, receive) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"x-upstream", b"yes"),
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; Path=/"),
            (b"connection", b"X-Resp-Hop"),
            (b"x-resp-hop", b"secret"),
            (b"keep-alive", b"timeout=99"),
            (b"proxy-authenticate", b"Basic realm=upstream"),
            (b"trailer", b"x-checksum"),
        ]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})

    stack.upstream.handler = answer
    response = stack.client.get("/mcp/tools", headers=bearer(stack))
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response.headers["x-upstream"] == "yes"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    for name in ("x-resp-hop", "keep-alive", "proxy-authenticate", "trailer"):
        assert name not in response.headers, name
    assert "x-resp-hop" not in response.headers.get("connection", "").lower()


def upstream_answers(status: int, headers: list[tuple[bytes, bytes]], body: bytes):
    async def answer(send, record, receive) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    return answer


JSON = (b"content-type", b"application/json")


@pytest.mark.parametrize(("status", "headers", "body"), [
    pytest.param(201, [JSON, (b"location", b"/mcp/items/7")], b'{"created": 7}', id="201"),
    pytest.param(202, [JSON], b'{"accepted": true}', id="202"),
    pytest.param(204, [], b"", id="204"),
    pytest.param(302, [(b"location", b"https://elsewhere.example/")], b"", id="302-not-followed"),
    pytest.param(400, [JSON], b'{"error": "upstream says bad"}', id="400"),
    pytest.param(401, [JSON, (b"www-authenticate", b"Basic realm=upstream")], b'{"u": 401}', id="401"),
    pytest.param(404, [JSON], b'{"error": "no such tool"}', id="404"),
    pytest.param(500, [(b"content-type", b"text/plain")], b"upstream exploded", id="500"),
    pytest.param(503, [JSON, (b"retry-after", b"7")], b'{"busy": true}', id="503"),
])
def test_upstream_status_codes_pass_through(stack: Stack, status: int, headers: list[tuple[bytes, bytes]],
                                            body: bytes) -> None:
    stack.upstream.handler = upstream_answers(status, headers, body)
    response = stack.client.post("/mcp/items", headers=bearer(stack), content=b"{}")
    assert response.status_code == status
    assert response.content == body
    for name, value in headers:
        assert response.headers.get_list(name.decode()) == [value.decode()]


# -- request target --------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    "a=1&b=2",
    "q=%2F%20x+y&empty=&flag",
    "x=%E2%9C%93&x=2&x=%e2%9c%93",
    "order=z&order=a&Order=B",
    "semi=a;b&colon=a:b&at=@&slash=/&qmark=?",
    "pct=%25&plus=%2B&amp=%26",
    "json=%7B%22a%22%3A1%7D",
    "=&&==",
])
def test_query_string_is_preserved_byte_for_byte(stack: Stack, query: str) -> None:
    token = bearer(stack)["authorization"]
    response = raw_request(stack.enforcer.port, f"/mcp/search?{query}", headers=[("Authorization", token)])
    assert response.status == 200, response.body
    seen = stack.upstream.requests[-1]
    assert seen.path == "/mcp/search"
    assert seen.query == query


@pytest.mark.parametrize(("sent", "upstream_path"), [
    ("/mcp", "/mcp"),
    ("/mcp/", "/mcp/"),
    ("/mcp/x", "/mcp/x"),
    ("/mcp/x/", "/mcp/x/"),
    ("/mcp/a/b/c", "/mcp/a/b/c"),
    ("/mcp/a%20b", "/mcp/a b"),
    ("/mcp/caf%C3%A9", "/mcp/café"),
    ("/mcp/x.json", "/mcp/x.json"),
    ("/mcp/...", "/mcp/..."),
])
def test_path_mapping(stack: Stack, sent: str, upstream_path: str) -> None:
    token = bearer(stack)["authorization"]
    response = raw_request(stack.enforcer.port, sent, headers=[("Authorization", token)])
    assert response.status == 200, response.body
    assert [r.path for r in stack.upstream.requests] == [upstream_path]


@pytest.mark.parametrize("path", ["/mcpx", "/mcp.x", "/mc", "/", "/other/mcp", "/MCP"])
def test_paths_outside_the_prefix_are_not_routed(stack: Stack, path: str) -> None:
    response = stack.client.get(path, headers=bearer(stack))
    assert response.status_code == 404
    assert response.json()["error"] == "no_route"
    assert response.json()["reason"] == "no_route"
    assert stack.upstream.requests == []


# -- methods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_method_is_forwarded_unchanged(stack: Stack, method: str) -> None:
    response = stack.client.request(method, "/mcp/thing", headers=bearer(stack),
                                    content=b"x" if method in ("POST", "PUT", "PATCH") else None)
    assert response.status_code == 200, response.text
    assert [r.method for r in stack.upstream.requests] == [method]
    if method == "HEAD":
        assert response.content == b""
    else:
        assert response.json() == {"path": "/mcp/thing", "method": method}


def test_concurrent_requests_keep_their_own_identity(stack: Stack) -> None:
    async def slow_echo(send, record, receive) -> None:
        await asyncio.sleep(0.05)
        body = json.dumps({"sub": record.header("x-enforcer-sub")}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [JSON]})
        await send({"type": "http.response.body", "body": body})

    stack.upstream.handler = slow_echo
    subjects = [f"user-{i}" for i in range(12)]
    results: dict[str, str] = {}

    def call(sub: str) -> None:
        with httpx.Client(base_url=stack.url, timeout=10) as client:
            results[sub] = client.get("/mcp/who", headers=bearer(stack, sub=sub)).json()["sub"]

    threads = [threading.Thread(target=call, args=(sub,)) for sub in subjects]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == {sub: sub for sub in subjects}
    assert time.monotonic() - started < 5



TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(("traceparent", "expected_id"), [
    pytest.param(f"00-{TRACE_ID}-00f067aa0ba902b7-01", TRACE_ID, id="valid-traceparent-gives-the-trace-id"),
    pytest.param(f"00-{'0' * 32}-00f067aa0ba902b7-01", None, id="all-zero-trace-id-ignored"),
    pytest.param(f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01", None, id="upper-case-hex-ignored"),
    pytest.param("garbage", None, id="malformed-ignored"),
    pytest.param(None, None, id="absent"),
])
def test_request_id_is_the_trace_id_or_fresh_and_reaches_upstream_and_errors(
        stack: Stack, traceparent: str | None, expected_id: str | None) -> None:
    extra = [("traceparent", traceparent)] if traceparent else []
    ok = raw_request(stack.enforcer.port, "/mcp/tools",
                     headers=[("Authorization", f"Bearer {sign(stack.key, claims())}"),
                              ("X-Request-Id", "client-chosen"), *extra])
    assert ok.status == 200
    forwarded = stack.upstream.requests[-1]
    request_id = forwarded.header("x-request-id")
    assert request_id is not None and re.fullmatch(r"[0-9a-f]{32}", request_id)
    if expected_id:
        assert request_id == expected_id
    assert forwarded.header("traceparent") == traceparent  # passed through untouched
    refused = raw_request(stack.enforcer.port, "/mcp/tools", headers=extra)
    assert refused.status == 401
    refused_id = refused.header("x-request-id")
    assert refused_id is not None and re.fullmatch(r"[0-9a-f]{32}", refused_id)
    assert (refused_id == expected_id) if expected_id else refused_id != request_id
