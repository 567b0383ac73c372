"""Forward an authorized request to its upstream and stream the answer back.

The hot path uses one pooled aiohttp ``ClientSession`` (measured several times cheaper
per request than httpx here). Bodies are streamed in both directions and never
decompressed; event streams are relayed chunk by chunk with no idle limit, and a
client that goes away closes the upstream stream. Failures before the response starts
become 502 ``upstream_unavailable`` or 504 ``upstream_timeout``; after it starts the
connection to the client is cut, so a truncated body is never mistaken for a whole one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp
from starlette.types import Receive, Send
from yarl import URL

from enforcer.errors import EnforcerError, InvalidUpstreamResponse, Reason, UpstreamTimeout, UpstreamUnavailable
from enforcer.proxy.headers import downstream_response_headers

if TYPE_CHECKING:
    from enforcer.mcp.exchange import BodyRewriter
    from enforcer.mcp.sse import EventStreamRewriter

log = logging.getLogger("enforcer.forward")

MAX_REWRITTEN_BYTES = 16 * 1024 * 1024
_NO_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


class StreamAborted(Exception):
    """The exchange broke off after forwarding began; the client connection must be cut."""

    reason = Reason.UPSTREAM_UNAVAILABLE


class StreamRejected(StreamAborted):
    """The upstream's stream had to be inspected and could not be: it is cut, not passed on."""

    reason = Reason.INVALID_UPSTREAM_RESPONSE


class ClientDisconnected(StreamAborted):
    """The client went away (mid-upload or mid-response); nothing is left to answer."""

    reason = Reason.CLIENT_DISCONNECTED


@dataclass(frozen=True)
class ForwardPlan:
    method: str
    url: str  # already encoded: path and query as received, mapped onto the upstream base
    headers: list[tuple[str, str]]
    has_body: bool
    connect_seconds: float
    read_seconds: float
    body: bytes | None = None  # already read (inspected); otherwise the body streams from ``receive``
    answer: AnswerHandler | None = None  # sees (and may rewrite) the answer first: MCP resources


class AnswerHandler(Protocol):
    """What the forwarder asks of a handler of the upstream's answer (``mcp.exchange.McpExchange``)."""

    async def response_started(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def body_rewriter(self, status: int, headers: list[tuple[bytes, bytes]]) -> BodyRewriter | None: ...


class Forwarder:
    """Owns the upstream connection pool; ``start``/``close`` run in the app's lifespan."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS, timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(self, plan: ForwardPlan, receive: Receive, send: Send) -> int:
        """Relay the request; return the upstream status."""
        assert self._session is not None, "Forwarder.start() was not awaited"
        body_state = _BodyState()
        data: bytes | AsyncIterator[bytes] | None = None
        if plan.body is not None:
            data, body_state.done = plan.body, True
        elif plan.has_body:
            data = request_chunks(receive, body_state)
        else:
            body_state.done = True
        try:
            async with asyncio.timeout(plan.connect_seconds + plan.read_seconds):
                response = await self._session.request(
                    plan.method, URL(plan.url, encoded=True), headers=plan.headers, data=data,
                    allow_redirects=False, compress=None, chunked=None,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=plan.connect_seconds),
                )
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not answer in time") from exc
        except aiohttp.ClientError as exc:
            if body_state.client_gone:
                raise ClientDisconnected("the client disconnected while sending the body") from exc
            log.warning("upstream request failed", extra={"error": type(exc).__name__})
            raise UpstreamUnavailable("the upstream could not be reached") from exc
        try:
            await self._relay(response, plan, receive, send, body_state)
        finally:
            response.release()
        return response.status

    async def _relay(self, response: aiohttp.ClientResponse, plan: ForwardPlan, receive: Receive,
                     send: Send, body_state: _BodyState) -> None:
        headers = downstream_response_headers(response.raw_headers)
        rewriter = None
        if plan.answer is not None:
            await plan.answer.response_started(response.status, headers)
            rewriter = plan.answer.body_rewriter(response.status, headers)
        if rewriter is not None and rewriter.rewrite is not None:
            await _send_rewritten(response, rewriter.rewrite, headers, plan.read_seconds, send)
            return
        if rewriter is not None:
            headers = [(name, value) for name, value in headers if name.lower() != b"content-length"]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        stream = rewriter.stream if rewriter is not None else None
        content = response.content
        if content.is_eof() and stream is None:
            # The whole answer is already buffered (most small answers): one message, no waiting.
            await send({"type": "http.response.body", "body": content.read_nowait(), "more_body": False})
            return
        is_stream = response.content_type == "text/event-stream" or response.content_length is None
        idle_seconds = None if is_stream else plan.read_seconds
        if not body_state.done:
            # Still relaying the request body, which owns ``receive``: no disconnect watcher possible.
            await _copy_body(response, send, idle_seconds, stream)
            return
        # The answer is still arriving (a stream, or a large or slow body of known length): stop
        # as soon as the client disconnects, so the upstream is not kept busy for no one.
        copier = asyncio.ensure_future(_copy_body(response, send, idle_seconds, stream))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({copier, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The request itself is cancelled (at shutdown, once the grace period is over): the
            # two helpers go with it, and their outcome is collected, not left to the loop.
            copier.cancel()
            watcher.cancel()
            response.close()
            await asyncio.gather(copier, watcher, return_exceptions=True)
            raise
        if copier not in done:
            copier.cancel()
            response.close()
            with contextlib.suppress(asyncio.CancelledError, StreamAborted):
                await copier
            return
        watcher.cancel()
        copier.result()


class _BodyState:
    __slots__ = ("done", "client_gone")

    def __init__(self) -> None:
        self.done = False
        self.client_gone = False


async def request_chunks(receive: Receive, state: _BodyState | None = None) -> AsyncIterator[bytes]:
    """The request body as it arrives; ``ClientDisconnected`` if the client goes away first."""
    state = state or _BodyState()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            state.client_gone = True
            raise ClientDisconnected("client disconnected while sending the body")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            state.done = True
            return


async def _read_chunk(response: aiohttp.ClientResponse, idle_seconds: float | None) -> bytes:
    try:
        if idle_seconds is None:
            return await response.content.readany()
        async with asyncio.timeout(idle_seconds):
            return await response.content.readany()
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        raise StreamAborted(f"upstream stream failed: {type(exc).__name__}") from exc


async def _copy_body(response: aiohttp.ClientResponse, send: Send, idle_seconds: float | None,
                     stream: EventStreamRewriter | None = None) -> None:
    """Relay the answer's body; through ``stream`` (event by event) when it must be inspected."""
    try:
        while chunk := await _read_chunk(response, idle_seconds):
            if stream is not None and not (chunk := await stream.feed(chunk)):
                continue
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        tail = await stream.finish() if stream is not None else b""
    except EnforcerError as exc:  # an event that cannot be inspected, or a session store that is down
        log.warning("upstream stream refused", extra={"error": type(exc).__name__})
        raise StreamRejected(exc.description) from exc
    await send({"type": "http.response.body", "body": tail, "more_body": False})


async def _send_rewritten(response: aiohttp.ClientResponse, rewrite: Callable[[bytes], bytes],
                          headers: list[tuple[bytes, bytes]], idle_seconds: float, send: Send) -> None:
    """Read the whole answer (capped), rewrite it, and send it with its new length. Until the
    answer starts, a failure is still a proper 502."""
    body = bytearray()
    try:
        while chunk := await _read_chunk(response, idle_seconds):
            body += chunk
            if len(body) > MAX_REWRITTEN_BYTES:
                raise InvalidUpstreamResponse("the upstream's answer is too large to filter")
    except StreamAborted as exc:
        raise UpstreamUnavailable("the upstream's answer broke off") from exc
    rewritten = rewrite(bytes(body))
    headers = [(name, value) for name, value in headers if name.lower() != b"content-length"]
    headers.append((b"content-length", str(len(rewritten)).encode("ascii")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": rewritten, "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
