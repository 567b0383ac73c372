"""The response side of a request to an MCP resource.

The forwarder hands the upstream's answer to an ``McpExchange`` before the client sees it:

* a session id the upstream issues (``Mcp-Session-Id`` on a 2xx answer) is bound to the
  caller, before the answer is released, so the caller's next request finds the binding;
  a 2xx answer to DELETE of a session ends the binding;
* list results are filtered (``mcp/filter.py``) when the request asked for a list, and on
  every GET stream (where the legacy SSE transport delivers all answers): a JSON answer is
  read whole and rewritten, an event stream event by event (``mcp/sse.py``);
* on a GET stream, the legacy transport's ``endpoint`` event (the URL to POST messages to,
  carrying ``session_id``) has its path moved from the upstream's base path to the resource's
  public prefix, so clients post where the enforcer listens, and binds that session.

Answers that need none of this are relayed untouched, byte for byte, at the normal cost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from enforcer.context import Principal
from enforcer.errors import InvalidUpstreamResponse
from enforcer.mcp.filter import LIST_METHODS, ListFilter
from enforcer.mcp.inspect import JsonRpcMessage
from enforcer.mcp.sessions import SessionStore, owner_of, session_key
from enforcer.mcp.sse import Event, EventStreamRewriter
from enforcer.policy.engine import Operation, ResourcePolicy
from enforcer.policy.model import McpOptions

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class BodyRewriter:
    """How an answer's body is rewritten: whole (``rewrite``), or chunk by chunk (``stream``)."""

    rewrite: Callable[[bytes], bytes] | None = None
    stream: EventStreamRewriter | None = None


@dataclass(frozen=True)
class PathMap:
    """The upstream's base path and the public prefix it is served under."""

    upstream_base: str
    public_prefix: str

    def public(self, path: str) -> str:
        """``path`` on the upstream, as clients of the enforcer reach it (unchanged if outside the base)."""
        base, prefix = self.upstream_base.rstrip("/"), self.public_prefix.rstrip("/")
        if not base:
            return prefix + path if path.startswith("/") else path
        if path == base or path.startswith(base + "/"):
            return (prefix + path[len(base):]) or "/"
        return path


class McpExchange:
    def __init__(self, *, resource_id: str, options: McpOptions, principal: Principal, method: str,
                 messages: tuple[JsonRpcMessage, ...], session_id: str | None, sessions: SessionStore | None,
                 rules: ResourcePolicy, list_operation: Operation, paths: PathMap) -> None:
        """``list_operation`` is what list entries are judged as (its message set per entry)."""
        self.resource_id, self.options, self.principal = resource_id, options, principal
        self.method, self.session_id, self.paths = method, session_id, paths
        self.sessions = sessions if options.bind_sessions else None
        asks_for_list = any(message.method in LIST_METHODS for message in messages)
        self.list_filter = (ListFilter(rules, principal, list_operation)
                            if options.filter_lists and (method == "GET" or asks_for_list) else None)
        self.watch_endpoint = method == "GET"  # the legacy transport announces its message URL there
        #: the upstream must answer in a form that can be read (no content coding)
        self.reads_answer = self.list_filter is not None or self.watch_endpoint
        self._expects_list = asks_for_list and self.list_filter is not None

    async def response_started(self, status: int, headers: Headers) -> None:
        """Bind a newly issued session, or forget a closed one, before the client is answered."""
        if self.sessions is None or not 200 <= status < 300:
            return
        for name, value in headers:
            if name.lower() == b"mcp-session-id":
                await self._bind(value.decode("latin-1"))
        if self.method == "DELETE" and self.session_id is not None:
            await self.sessions.forget(session_key(self.resource_id, self.session_id))

    def body_rewriter(self, status: int, headers: Headers) -> BodyRewriter | None:
        if not self.reads_answer or not 200 <= status < 300:
            return None
        content_type, coded = "", False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-type":
                content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
            elif lower == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                coded = True
        if content_type == "text/event-stream":
            if coded:
                raise InvalidUpstreamResponse("the upstream's event stream is compressed and cannot be inspected")
            return BodyRewriter(stream=EventStreamRewriter(self._on_event))
        if self._expects_list and status != 202:  # 202: accepted, the answer comes on the GET stream (legacy SSE)
            if content_type != "application/json" or coded:
                raise InvalidUpstreamResponse("the upstream answered a list request in a form that cannot be filtered")
            assert self.list_filter is not None
            return BodyRewriter(rewrite=self.list_filter.rewrite_json)
        return None

    async def _bind(self, session_id: str) -> None:
        assert self.sessions is not None
        await self.sessions.bind(session_key(self.resource_id, session_id), owner_of(self.principal),
                                 self.options.session_ttl_seconds)

    async def _on_event(self, event: Event) -> bytes | None:
        if event.type == "endpoint" and self.watch_endpoint:
            return await self._endpoint(event)
        if event.type != "message" or self.list_filter is None or not event.data.strip():
            return None
        try:
            document = json.loads(event.data)
        except ValueError as exc:
            raise InvalidUpstreamResponse("an event of the upstream's stream is not valid JSON") from exc
        if not self.list_filter.filter_document(document):
            return None
        return event.with_data(json.dumps(document, separators=(",", ":")))

    async def _endpoint(self, event: Event) -> bytes:
        """The legacy transport's message URL: bind its session, serve it under the public prefix."""
        url = urlsplit(event.data.strip())
        if self.sessions is not None:
            ids = parse_qs(url.query, keep_blank_values=True).get("session_id", [])
            if len(ids) != 1:
                raise InvalidUpstreamResponse("the upstream's endpoint event does not name one session_id")
            await self._bind(ids[0])
        return event.with_data(self.paths.public(url.path) + (f"?{url.query}" if url.query else ""))
