"""Streaming and upstream failures end to end (DESIGN.md section 1, stage 10).

Event streams are relayed event by event (checked in lock step: the upstream sends the
next event only once the client has received the previous one, so a buffering proxy
cannot pass), a client that goes away closes the upstream stream, and failures become
502 ``upstream_unavailable`` / 504 ``upstream_timeout`` before the response starts, or a
cut connection after it started (never a truncated body that looks whole).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, reset, start_stack
from tests.support import (
    JWKSEndpoint,
    SigningKey,
    basic_policy,
    claims,
    free_port,
    jwks,
    serve_enforcer,
    serving,
    sign,
)

TIMEOUTS = "    timeouts: {connect_seconds: 1, read_seconds: 1}"
SSE = (b"content-type", b"text/event-stream")


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("streaming"), extra_resource=TIMEOUTS)


@pytest.fixture
def stack(shared_stack: Stack) -> Iterator[Stack]:
    yield reset(shared_stack)
    reset(shared_stack)


def auth(key: SigningKey) -> dict[str, str]:
    return {"authorization": f"Bearer {sign(key, claims())}"}


async def wait_for(event: threading.Event, seconds: float) -> bool:
    """Wait for a threading.Event from inside the upstream's event loop without blocking it."""
    deadline = time.monotonic() + seconds
    while not event.is_set():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


# -- event by event ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "content_type", "events"), [
    pytest.param("GET", b"text/event-stream", [f"id: {i}\ndata: event {i}\n\n".encode() for i in range(4)],
                 id="sse-get"),
    pytest.param("POST", b"text/event-stream",
                 [f'event: message\ndata: {{"jsonrpc":"2.0","id":{i}}}\n\n'.encode() for i in range(4)],
                 id="sse-post-streamable-http"),
    pytest.param("GET", b"application/x-ndjson", [f'{{"n": {i}}}\n'.encode() for i in range(4)],
                 id="unknown-length-chunked"),
])
def test_events_arrive_as_they_are_sent(stack: Stack, method: str, content_type: bytes, events: list[bytes]) -> None:
    received_by_client = [threading.Event() for _ in events]
    log: list[tuple[str, int, bool]] = []

    async def lock_step(send, record, receive) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")]})
        for index, event in enumerate(events):
            await send({"type": "http.response.body", "body": event, "more_body": True})
            # the next event waits until the client has this one: a buffering proxy stalls here
            log.append(("client got event", index, await wait_for(received_by_client[index], 5)))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    stack.upstream.handler = lock_step
    received = b""
    arrivals: list[float] = []
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call"}' if method == "POST" else None
    with stack.client.stream(method, "/mcp/events", headers=auth(stack.key), content=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == content_type.decode()
        for chunk in response.iter_raw():
            received += chunk
            while len(arrivals) < len(events) and received.startswith(b"".join(events[:len(arrivals) + 1])):
                arrivals.append(time.monotonic())
                received_by_client[len(arrivals) - 1].set()
    assert received == b"".join(events)
    assert log == [("client got event", i, True) for i in range(len(events))]


def test_stream_may_idle_longer_than_read_seconds(stack: Stack) -> None:
    async def pausing(send, record, receive) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [SSE]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await asyncio.sleep(1.6)  # read_seconds is 1: event streams have no idle limit
        await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": False})

    stack.upstream.handler = pausing
    response = stack.client.get("/mcp/events", headers=auth(stack.key))
    assert response.status_code == 200
    assert response.content == b"data: one\n\ndata: two\n\n"


# -- the client goes away ------------------------------------------------------------------------


def ticking_upstream(state: dict[str, Any], content_type: bytes = b"text/event-stream",
                     length: int | None = None) -> Callable[..., Any]:
    """Sends a first event, then ticks until the enforcer's connection to it goes away."""

    async def handler(send, record, receive) -> None:
        headers = [(b"content-type", content_type)]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        disconnect = asyncio.ensure_future(receive())  # the body is read: next comes http.disconnect
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if disconnect.done():
                state["disconnect"] = disconnect.result()["type"]
                state["at"] = time.monotonic()
                return
            await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
            state["ticks"] = state.get("ticks", 0) + 1
            await asyncio.sleep(0.05)
        disconnect.cancel()
        state["disconnect"] = "never"

    return handler


def read_until_then_hang_up(port: int, request: bytes, marker: bytes) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        seen = b""
        while marker not in seen:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed before {marker!r}: {seen[:300]!r}"
            seen += chunk
        assert seen.startswith(b"HTTP/1.1 200"), seen[:300]
    return time.monotonic()


def wait_until(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize(("method", "content_type", "length"), [
    pytest.param("GET", b"text/event-stream", None, id="sse-get"),
    pytest.param("POST", b"text/event-stream", None, id="sse-post"),
    pytest.param("GET", b"application/octet-stream", None, id="chunked-download"),
    pytest.param("GET", b"application/octet-stream", 10_000_000, id="known-length-download"),
])
def test_client_disconnect_closes_the_upstream_stream(stack: Stack, method: str, content_type: bytes,
                                                      length: int | None) -> None:
    state: dict[str, Any] = {}
    stack.upstream.handler = ticking_upstream(state, content_type, length)
    token = sign(stack.key, claims())
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call"}' if method == "POST" else b""
    request = (f"{method} /mcp/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    hung_up = read_until_then_hang_up(stack.enforcer.port, request, b"data: first")
    assert wait_until(lambda: "disconnect" in state, 4), "the upstream stream was not closed"
    assert state["disconnect"] == "http.disconnect"
    assert state["at"] - hung_up < 2


# -- the upstream fails ------------------------------------------------------------------------


class RawTCPServer:
    """A loopback TCP listener that misbehaves: ``close`` hangs up after reading the request,
    ``garbage`` answers with bytes that are not HTTP, ``silent`` never answers."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        held: list[socket.socket] = []
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(2)
            try:
                conn.recv(65536)
            except OSError:
                pass
            if self.behaviour == "garbage":
                conn.sendall(b"\x00\x01 this is not HTTP\r\n\r\n")
            if self.behaviour == "silent":
                held.append(conn)
            else:
                conn.close()
        for conn in held:
            conn.close()

    def __enter__(self) -> RawTCPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@contextmanager
def enforcer_for(directory: Path, upstream: str) -> Iterator[tuple[SigningKey, httpx.Client]]:
    key = SigningKey.generate("ES256", kid="k1")
    with serving(JWKSEndpoint(document=jwks(key))) as jwks_server:
        text = basic_policy(jwks_line=f"jwks_uri: {jwks_server.url}/jwks", upstream=upstream, extra_resource=TIMEOUTS)
        with serve_enforcer(directory, text) as (_, server), httpx.Client(base_url=server.url, timeout=10) as client:
            yield key, client


def assert_upstream_error(response: httpx.Response, status: int, code: str, upstream_port: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["reason"] == code
    assert str(upstream_port) not in response.text and "127.0.0.1" not in response.text
    assert "www-authenticate" not in response.headers


def test_connect_refused_is_502(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    with enforcer_for(tmp_path, f"http://127.0.0.1:{port}/mcp") as (key, client):
        started = time.monotonic()
        response = client.get("/mcp/tools", headers=auth(key))
    assert_upstream_error(response, 502, "upstream_unavailable", port)
    assert time.monotonic() - started < 2


def test_upstream_gone_after_it_answered_is_502(tmp_path: Path) -> None:
    with closing(start_stack(tmp_path, extra_resource=TIMEOUTS)) as stacks:
        stack = next(stacks)
        assert stack.client.get("/mcp/tools", headers=auth(stack.key)).status_code == 200  # pooled connection
        stack.upstream_server.stop()
        response = stack.client.get("/mcp/tools", headers=auth(stack.key))
    assert_upstream_error(response, 502, "upstream_unavailable", stack.upstream_server.port)


@pytest.mark.parametrize("behaviour", ["close", "garbage"])
def test_broken_upstream_is_502(tmp_path: Path, behaviour: str) -> None:
    with RawTCPServer(behaviour) as upstream, enforcer_for(tmp_path, f"http://127.0.0.1:{upstream.port}/mcp") as (
            key, client):
        response = client.get("/mcp/tools", headers=auth(key))
    assert_upstream_error(response, 502, "upstream_unavailable", upstream.port)


def test_silent_upstream_is_504(tmp_path: Path) -> None:
    with RawTCPServer("silent") as upstream, enforcer_for(tmp_path, f"http://127.0.0.1:{upstream.port}/mcp") as (
            key, client):
        started = time.monotonic()
        response = client.get("/mcp/tools", headers=auth(key))
        elapsed = time.monotonic() - started
    assert_upstream_error(response, 504, "upstream_timeout", upstream.port)
    assert 0.9 < elapsed < 4


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("slow"), extra_resource=TIMEOUTS)


def test_slow_upstream_is_504(slow_stack: Stack) -> None:
    release = threading.Event()

    async def slow(send, record, receive) -> None:
        await wait_for(release, 5)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"too late"})

    slow_stack.upstream.handler = slow
    try:
        started = time.monotonic()
        response = slow_stack.client.get("/mcp/tools", headers=auth(slow_stack.key))
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert_upstream_error(response, 504, "upstream_timeout", slow_stack.upstream_server.port)
    assert 0.9 < elapsed < 4


def test_body_stalling_after_the_headers_cuts_the_connection(slow_stack: Stack) -> None:
    release = threading.Event()

    async def stalls(send, record, receive) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b'{"partial": ', "more_body": True})
        await wait_for(release, 5)

    slow_stack.upstream.handler = stalls
    try:
        started = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):  # truncated, never mistaken for a whole body
            slow_stack.client.get("/mcp/tools", headers=auth(slow_stack.key))
        assert time.monotonic() - started < 4
    finally:
        release.set()


def test_upstream_dying_mid_stream_cuts_the_connection(slow_stack: Stack) -> None:
    async def dies(send, record, receive) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [SSE]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await asyncio.sleep(0.1)
        raise RuntimeError("upstream crashed mid-stream")  # uvicorn drops the connection

    slow_stack.upstream.handler = dies
    received = b""
    with pytest.raises(httpx.RemoteProtocolError), \
            slow_stack.client.stream("GET", "/mcp/events", headers=auth(slow_stack.key)) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    assert received == b"data: one\n\n"
