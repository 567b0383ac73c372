"""Shared test machinery: real keys, real tokens, real servers on 127.0.0.1.

Nothing here is a mock: issuers are real key pairs, JWKS endpoints and upstreams are
uvicorn servers on free loopback ports, and the enforcer under test runs the same
``EnforcerApp`` that ``enforcer serve`` runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from joserfc import jws
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

RESOURCE = "http://127.0.0.1:8080/mcp"
ISSUER = "https://issuer.test"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SigningKey:
    """A private key with the kid and algorithm it signs with."""

    key: Key
    alg: str
    kid: str

    @classmethod
    def generate(cls, alg: str = "ES256", kid: str | None = None) -> SigningKey:
        if alg.startswith("ES"):
            curve = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
            key: Key = ECKey.generate_key(curve)
        elif alg in ("EdDSA", "Ed25519"):
            key = OKPKey.generate_key("Ed25519")
        else:
            key = RSAKey.generate_key(2048)
        return cls(key, alg, kid or f"{alg.lower()}-{time.monotonic_ns() % 10**9}")

    def public_jwk(self, with_alg: bool = True) -> dict[str, Any]:
        jwk = dict(self.key.as_dict(private=False))
        jwk["kid"] = self.kid
        jwk["use"] = "sig"
        if with_alg:
            jwk["alg"] = self.alg
        return jwk


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.public_jwk() for k in keys]}


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid RFC 9068 claim set for ``RESOURCE``; pass ``name=None`` to drop a claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER, "sub": "alice", "client_id": "agent-42", "aud": RESOURCE,
        "iat": now, "exp": now + 600, "jti": f"jti-{time.monotonic_ns()}", "scope": "tools:read tools:call",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: SigningKey, payload: dict[str, Any] | bytes, **header_overrides: Any) -> str:
    """A compact JWS signed by ``key``; ``header_overrides`` with None values drop members."""
    header: dict[str, Any] = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
    header.update(header_overrides)
    header = {k: v for k, v in header.items() if v is not None}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return jws.serialize_compact(header, body, key.key, algorithms=[header["alg"]])


def raw_token(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, signature: bytes = b"") -> str:
    """Assemble a token by hand (for malformed and unsigned tokens)."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64url(h)}.{b64url(p)}.{b64url(signature)}"


class ServerThread:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any, port: int | None = None, lifespan: str = "auto") -> None:
        self.port = port or free_port()
        # the settings `enforcer serve` uses: no trust in X-Forwarded-*, no headers of uvicorn's own
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan,
                                access_log=False, proxy_headers=False, server_header=False, date_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serving(app: Any, port: int | None = None, lifespan: str = "auto") -> Iterator[ServerThread]:
    server = ServerThread(app, port, lifespan).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class JWKSEndpoint:
    """A real JWKS endpoint whose document, status and Cache-Control tests can change."""

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    status: int = 200
    cache_control: str | None = "max-age=300"
    fetches: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.fetches += 1
        body = json.dumps(self.document).encode()
        headers = [(b"content-type", b"application/json")]
        if self.cache_control:
            headers.append((b"cache-control", self.cache_control.encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


async def read_body(receive: Any) -> bytes:
    """The whole body of an ASGI request, for the test servers here."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


@dataclass
class RecordingUpstream:
    """An upstream that records every request and answers with a small JSON echo.

    ``handler`` may replace the answer: it receives the ASGI ``send`` and the record."""

    requests: list[Recorded] = field(default_factory=list)
    handler: Callable[..., Any] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        record = Recorded(scope["method"], scope["path"], scope["query_string"].decode("latin-1"),
                          [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]], body)
        self.requests.append(record)
        if self.handler is not None:
            await self.handler(send, record, receive)
            return
        payload = json.dumps({"path": record.path, "method": record.method}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Poll ``condition`` until it returns something true, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


#: the first event of a held ``/stream`` response
HELD_EVENT = b"data: first\n\n"


async def _wait_until(event: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not event.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def holding_handler(release: threading.Event) -> Callable[..., Any]:
    """A ``RecordingUpstream`` handler for requests that stay in flight: a path ending in
    ``/stream`` gets an event stream (``HELD_EVENT``) that stays open until ``release``; one
    ending in ``/slow`` is answered ``done`` once released (at most a minute later)."""

    async def handle(send: Any, record: Recorded, receive: Any) -> None:
        if record.path.endswith("/stream"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": HELD_EVENT, "more_body": True})
            await _wait_until(release, 60)
            await send({"type": "http.response.body", "body": b""})
            return
        if record.path.endswith("/slow"):
            await _wait_until(release, 60)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done"})

    return handle


@dataclass
class HeldWorld:
    """An ES256 issuer key behind a real JWKS endpoint, an upstream that holds requests
    (``holding_handler``) until ``release`` is set, and a policy file for ``enforcer serve``."""

    key: SigningKey
    upstream: RecordingUpstream
    release: threading.Event
    policy: Path

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {sign(self.key, claims())}"}

    def received(self, path: str) -> list[str]:
        """The request ids of the requests for ``path`` that reached the upstream."""
        return [r.header("x-request-id") or "" for r in self.upstream.requests if r.path == path]


@contextmanager
def held_world(policy_path: Path, policy_text: Callable[[str, str], str]) -> Iterator[HeldWorld]:
    """A ``HeldWorld`` whose policy, ``policy_text(jwks_url, upstream_url)``, is written to
    ``policy_path``; held requests are released before the servers stop."""
    key = SigningKey.generate("ES256", kid="k1")
    release = threading.Event()
    upstream = RecordingUpstream(handler=holding_handler(release))
    with serving(JWKSEndpoint(document=jwks(key))) as issuer, serving(upstream) as upstream_server:
        policy_path.parent.mkdir(parents=True, exist_ok=True)
        policy_path.write_text(policy_text(f"{issuer.url}/jwks", upstream_server.url))
        try:
            yield HeldWorld(key, upstream, release, policy_path)
        finally:
            release.set()


def write_policy(directory: Path, text: str, name: str = "policy.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def basic_policy(*, jwks_line: str, upstream: str, algorithms: str = "[ES256, RS256, PS256, EdDSA]",
                 rules: str | None = None, extra_resource: str = "", extra_issuer: str = "") -> str:
    """A one-issuer, one-resource policy for ``RESOURCE``; ``rules`` is YAML indented 6 spaces."""
    rules = rules or """
      - id: allow-agents
        effect: allow
        client_ids: ["agent-*"]
        scopes: [tools:read]
"""
    return f"""version: 1
issuers:
  - id: test
    issuer: {ISSUER}
    {jwks_line}
    algorithms: {algorithms}
    jwks_refetch_interval_seconds: 1
{extra_issuer}
resources:
  - id: demo
    resource: {RESOURCE}
    match: {{path_prefix: /mcp}}
    upstream: {upstream}
    issuers: [test]
    scopes_supported: [tools:read, tools:call]
{extra_resource}
    rules:{rules}"""


# -- helpers shared by the end-to-end suites (tests/e2e) ----------------------------------


@contextmanager
def serve_enforcer(directory: Path, policy_text: str) -> Iterator[tuple[Any, ServerThread]]:
    """An ``EnforcerApp`` for ``policy_text`` (written into ``directory``), served on 127.0.0.1
    with the settings of ``enforcer serve`` (see ``ServerThread``).

    For stacks that ``start_stack`` cannot build: a custom upstream app, several resources,
    a JWKS endpoint that is down from the start."""
    from enforcer.app import EnforcerApp
    from enforcer.policy.loader import load_policy

    app = EnforcerApp(load_policy([write_policy(directory, policy_text)]))
    server = ServerThread(app, lifespan="on").start()
    try:
        yield app, server
    finally:
        server.stop()


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in arrival order
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, target: bytes | str, *, method: str = "GET",
                headers: list[tuple[str, str]] | None = None, body: bytes = b"", timeout: float = 10) -> RawResponse:
    """Send exactly ``target`` as the request target (no client-side normalisation) and read the answer."""
    import http.client

    target = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method.encode("ascii") + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers or []]
    if body:
        lines.append(f"Content-Length: {len(body)}".encode("ascii"))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        data = response.read()
        return RawResponse(response.status, [(k.lower(), v) for k, v in response.getheaders()], data)
