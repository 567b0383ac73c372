"""The ASGI edges: the proxy listener, its lifespan, and the one error handler.

The proxy is a plain ASGI callable (no ``BaseHTTPMiddleware``: it buffers bodies and
breaks event streams). Per request it builds a ``RequestInfo``, serves RFC 9728
metadata itself, runs the pipeline, forwards, and in a ``finally`` records the
outcome, whatever happened. Every ``EnforcerError`` becomes its JSON answer here; any
other exception becomes a bare 500 with no detail, and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send

from enforcer.auth.httpsig import SignatureVerifier
from enforcer.auth.jwks import KeyCache
from enforcer.auth.replay import ReplayCache, make_replay_cache
from enforcer.clock import Clock, SystemClock
from enforcer.config import Settings, serving_problem
from enforcer.context import Outcome, RequestInfo
from enforcer.errors import BodyTooLarge, EnforcerError, Reason
from enforcer.mcp.exchange import McpExchange, PathMap
from enforcer.mcp.inspect import error_response
from enforcer.mcp.sessions import SessionStore, make_session_store
from enforcer.metadata import WELL_KNOWN, challenge, metadata_document
from enforcer.observability.audit import AuditLog, audit_record, build_audit_log
from enforcer.observability.metrics import Metrics
from enforcer.observability.tracing import Tracing, make_tracing
from enforcer.pipeline import Authorized, session_id
from enforcer.policy.engine import Operation
from enforcer.policy.loader import Policy
from enforcer.policy.model import Resource
from enforcer.proxy import headers as hdr
from enforcer.proxy.downstream import inbound_token
from enforcer.proxy.forward import Forwarder, ForwardPlan, StreamAborted, request_chunks
from enforcer.reload import PolicyReloader, cancel, run_in_background
from enforcer.routing import Route
from enforcer.state import PolicyState, Services

log = logging.getLogger("enforcer.app")

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}\Z")


class EnforcerApp:
    """The proxy listener's ASGI application for one loaded policy."""

    def __init__(
        self,
        policy: Policy,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
        replay: ReplayCache | None = None,
        sessions: SessionStore | None = None,
        audit: AuditLog | None = None,
        tracing: Tracing | None = None,
        verify_tokens: bool = True,
        policy_paths: tuple[str, ...] = (),
        reload_on_sighup: bool = False,
        reload_check: Callable[[Policy], str | None] | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.metrics.preinitialise([r.id for r in policy.resources], list(policy.issuers),
                                   audit.sink_names() if audit is not None else [])
        self.metrics.set_policy(policy.version_hash)
        if audit is not None and audit.metrics is None:
            audit.metrics = self.metrics  # its written / failed / dropped counts land where /metrics reads
        self.audit = audit
        self.tracing = tracing
        self.http = httpx.AsyncClient(transport=http_transport, follow_redirects=False, timeout=5.0)
        self.replay = replay or make_replay_cache(None, self.clock)
        self.sessions = sessions or make_session_store(None, self.clock)
        self._services = Services(self.http, self.clock, self.replay, self.sessions, self.metrics.jwks_fetch)
        #: the policy in force and all that is derived from it; a request reads it once, at its start
        self.state = PolicyState.build(policy, self._services)
        self.forwarder = Forwarder()
        self._key_tasks: dict[int, asyncio.Task[None]] = {}  # id(key cache) -> its refresh loop
        self._tasks: list[asyncio.Task[None]] = []
        self.reloader = PolicyReloader(policy_paths, lambda: self.state.policy, self._swap, self.metrics.policy_reload,
                                       reload_check) if policy_paths else None
        self._reload_on_sighup = reload_on_sighup
        # Only the benchmark harness sets this (it is not reachable from a policy or the CLI).
        self._verify_tokens = verify_tokens

    @classmethod
    def from_settings(cls, settings: Settings, policy: Policy) -> EnforcerApp:
        """The proxy application as ``enforcer serve`` runs it (one process or each worker):
        the replay store, audit sinks and tracing that the settings and environment ask for."""
        clock = SystemClock()
        return cls(policy, clock=clock, replay=make_replay_cache(settings.replay_store, clock),
                   sessions=make_session_store(settings.replay_store, clock),
                   audit=build_audit_log(settings.audit), tracing=make_tracing(),
                   policy_paths=settings.policy_paths, reload_on_sighup=True,
                   reload_check=lambda policy: serving_problem(settings, policy))

    # the policy in force, for callers outside a request (a request keeps the state it started with)
    @property
    def policy(self) -> Policy:
        return self.state.policy

    @property
    def keys(self) -> dict[str, KeyCache]:
        return self.state.keys

    @property
    def signatures(self) -> dict[str, SignatureVerifier]:
        return self.state.signatures

    # -- policy reload ------------------------------------------------------------------

    async def _start_key_caches(self, state: PolicyState) -> None:
        """Fetch the keys of every cache of ``state`` not yet running, then keep them fresh."""
        fresh = [cache for cache in state.key_caches() if id(cache) not in self._key_tasks]
        await asyncio.gather(*(cache.refresh("startup") for cache in fresh))
        for cache in fresh:
            self._key_tasks[id(cache)] = asyncio.ensure_future(cache.run())

    async def _swap(self, policy: Policy) -> None:
        """Put a validated policy in force: build its state (reusing unchanged key caches),
        fetch the new keys, swap, then stop the refresh loops of caches no longer used."""
        state = PolicyState.build(policy, self._services, previous=self.state)
        await self._start_key_caches(state)
        self.metrics.preinitialise([r.id for r in policy.resources], list(policy.issuers))
        self.state = state
        self.metrics.set_policy(policy.version_hash)
        in_use = {id(cache) for cache in state.key_caches()}
        await cancel([self._key_tasks.pop(key) for key in list(self._key_tasks) if key not in in_use])

    # -- lifespan -----------------------------------------------------------------------

    async def startup(self) -> None:
        await self.forwarder.start()
        if self.audit is not None:
            await self.audit.start()
        await self._start_key_caches(self.state)
        if self.reloader is not None:
            self._tasks.append(run_in_background(self.reloader.watch()))
            if self._reload_on_sighup:
                asyncio.get_running_loop().add_signal_handler(
                    signal.SIGHUP, lambda: run_in_background(self.reloader.reload("SIGHUP")))  # type: ignore[union-attr]

    async def shutdown(self) -> None:
        if self.reloader is not None and self._reload_on_sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await cancel([*self._tasks, *self._key_tasks.values()])
        self._tasks, self._key_tasks = [], {}
        await self.forwarder.close()
        await self.http.aclose()
        await self.replay.close()
        await self.sessions.close()
        if self.audit is not None:
            await self.audit.close()  # drains the queue before the process exits

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when every key cache of the policy in force has keys. A refused reload does not
        make the process unready (the last good policy serves); the document says so."""
        state = self.state
        issuers = {issuer_id: keys.status() for issuer_id, keys in state.keys.items()}
        for issuer_id, keys in state.keys.items():
            self.metrics.jwks_keys.labels(issuer_id).set(len(keys.keys))
            if issuers[issuer_id]["age_seconds"] is not None:
                self.metrics.jwks_age.labels(issuer_id).set(issuers[issuer_id]["age_seconds"])
        signature_keys = {cache.issuer.id: cache.status()
                          for verifier in state.signatures.values() for cache in verifier.keyring.caches}
        ready = all(status["ready"] for status in (*issuers.values(), *signature_keys.values()))
        document = {"ready": ready, "policy": state.policy.version_hash, "issuers": issuers}
        if signature_keys:
            document["signature_keys"] = signature_keys
        if self.reloader is not None:
            document["policy_reload"] = self.reloader.status()
        return ready, document

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            # No WebSocket upgrade is authorised or forwarded: closing before accept is a 403.
            await send({"type": "websocket.close", "code": 1008, "reason": "websocket is not supported"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # report, do not serve half-started
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": type(exc).__name__})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        state = self.state  # this request's policy, to its end, whatever a reload swaps in meanwhile
        request = _request_info(scope)
        outcome = Outcome()
        resource: Resource | None = None
        self.metrics.inflight.inc()
        try:
            if request.method in ("GET", "HEAD") and request.raw_path.startswith(WELL_KNOWN.encode()):
                if await self._serve_metadata(state, request, send, outcome):
                    return
            route = state.pipeline.route(request, outcome)
            resource = route.resource
            authorized = None
            if self._verify_tokens:
                authorized = await state.pipeline.authorize(request, route, outcome, _body_reader(request, receive))
            outcome.reason = Reason.ALLOWED
            forward_started = time.perf_counter()
            try:
                outcome.status = await self._forward(state, request, route, authorized, outcome, receive, send)
                outcome.forwarded = True
            finally:
                outcome.stages["upstream"] = time.perf_counter() - forward_started
        except EnforcerError as error:
            outcome.reason = error.reason
            outcome.status = error.status
            await send_error(send, error, resource, request.request_id, _jsonrpc_messages(state, resource, outcome))
        except StreamAborted as aborted:
            outcome.reason = aborted.reason
        except Exception:
            log.exception("internal error", extra={"request_id": request.request_id})
            outcome.reason, outcome.status = Reason.INTERNAL_ERROR, 500
            with contextlib.suppress(Exception):
                await send_error(send, EnforcerError("internal error"), None, request.request_id)
        finally:
            self.metrics.inflight.dec()
            seconds = time.perf_counter() - started
            allowed = outcome.reason is Reason.ALLOWED or (outcome.decision is not None and outcome.decision.allowed)
            self._record(request, outcome, allowed, seconds)
            if self.tracing is not None:
                try:
                    self.tracing.record(request, outcome, allowed=allowed, seconds=seconds)
                except Exception:  # tracing must never break a request
                    log.exception("tracing failed", extra={"request_id": request.request_id})
            if self.audit is not None:
                await self.audit.submit(audit_record(request, outcome, allowed=allowed, seconds=seconds,
                                                     policy_hash=state.policy.version_hash, now=self.clock.time()))

    def _record(self, request: RequestInfo, outcome: Outcome, allowed: bool, seconds: float) -> None:
        """The metrics of one finished request, from its outcome."""
        metrics = self.metrics
        metrics.observe(outcome.resource_id, allowed, outcome.reason, seconds)
        for stage, stage_seconds in outcome.stages.items():
            metrics.stage(stage, stage_seconds)
        if outcome.forwarded:
            metrics.upstream_response(outcome.resource_id, outcome.status)
        elif outcome.reason is Reason.REPLAY_CACHE_UNAVAILABLE:
            metrics.replay_cache_error()
        if outcome.decision is not None and outcome.decision.shadow is not None:
            metrics.shadow_decision(outcome.resource_id, outcome.decision.shadow.result)

    async def _serve_metadata(self, state: PolicyState, request: RequestInfo, send: Send, outcome: Outcome) -> bool:
        path = request.raw_path.decode("latin-1") + (
            "?" + request.query_string.decode("latin-1") if request.query_string else "")
        resource = state.metadata.lookup(path, (request.header(b"host") or b"").decode("latin-1"))
        if resource is None:
            return False
        outcome.resource_id, outcome.reason, outcome.status = resource.id, Reason.ALLOWED, 200
        body = json.dumps(metadata_document(resource, state.policy.issuers)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            _JSON, (b"cache-control", b"public, max-age=300"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else body})
        return True

    async def _forward(self, state: PolicyState, request: RequestInfo, route: Route, authorized: Authorized | None,
                       outcome: Outcome, receive: Receive, send: Send) -> int:
        resource = route.resource
        downstream = None  # the upstream's own token (RFC 8693 exchange), for resources with downstream_token
        exchanger = state.exchangers.get(resource.id) if state.exchangers else None
        if exchanger is not None and authorized is not None:
            p = authorized.principal
            downstream = await exchanger.token_for(inbound_token(request, p), p)
        workload = state.pipeline.workloads.get(resource.id)
        headers = hdr.upstream_request_headers(request.headers, forward_token=resource.forward_token,
                                               also_drop=workload.strip if workload is not None else frozenset())
        answer = self._mcp_exchange(state, request, route, authorized, outcome.path)
        if answer is not None and answer.reads_answer:
            # the answer is inspected: ask for it without a content coding
            headers = [(name, value) for name, value in headers if name != "accept-encoding"]
            headers.append(("accept-encoding", "identity"))
        headers += hdr.forwarded_headers(request.client, request.header(b"x-forwarded-for"),
                                         route.public_scheme, route.public_host)
        headers.append(("x-request-id", request.request_id))
        if authorized is not None:
            p = authorized.principal
            act = json.dumps(p.act, separators=(",", ":"), ensure_ascii=False) if p.act is not None else None
            headers += hdr.identity_headers(p.sub, p.client_id, p.scopes, act)
            if p.workload is not None:
                headers.append(hdr.workload_header(p.workload))
        if downstream is not None:  # forward_token is off here (a load error otherwise): no other Authorization
            headers.append(("authorization", f"Bearer {downstream}"))
        plan = ForwardPlan(
            method=request.method,
            url=route.upstream_url(request.raw_path, request.query_string),
            headers=headers,
            has_body=request.has_body,
            body=authorized.body if authorized is not None else None,
            connect_seconds=resource.timeouts.connect_seconds,
            read_seconds=resource.timeouts.read_seconds,
            answer=answer,
        )
        return await self.forwarder.forward(plan, receive, send)

    def _mcp_exchange(self, state: PolicyState, request: RequestInfo, route: Route,
                      authorized: Authorized | None, path: str) -> McpExchange | None:
        """The handler of the answer to a request to an MCP resource (None for other resources).
        List entries are judged as the POST a client would send to this request's path."""
        options = state.pipeline.mcp[route.resource.id]
        if options is None or authorized is None:
            return None
        return McpExchange(resource_id=route.resource.id, options=options, principal=authorized.principal,
                           method=request.method, messages=authorized.messages, session_id=session_id(request),
                           sessions=self.sessions, rules=state.pipeline.rules[route.resource.id],
                           list_operation=Operation("POST", path, self.clock.time()),
                           paths=PathMap(route.upstream_base, route.prefix))


def _jsonrpc_messages(state: PolicyState, resource: Resource | None, outcome: Outcome) -> tuple[Any, ...]:
    """The JSON-RPC messages to answer in kind, when the resource asks for JSON-RPC refusals."""
    options = state.pipeline.mcp.get(resource.id) if resource is not None else None
    return outcome.messages if options is not None and options.error_format == "jsonrpc" else ()


async def send_error(send: Send, error: EnforcerError, resource: Resource | None, request_id: str,
                     messages: tuple[Any, ...] = ()) -> None:
    """The one place an ``EnforcerError`` becomes a response. ``X-Request-Id`` lets an agent
    developer quote the refusal to whoever reads the enforcer's logs. With ``messages`` (an MCP
    resource answering in JSON-RPC) the body is a JSON-RPC error for each request among them,
    carrying the usual body as ``error.data``; status and challenge do not change."""
    document: Any = error.body()
    if messages:
        document = error_response(messages, error.jsonrpc_code, error.description, document) or document
    body = json.dumps(document).encode()
    headers = [_JSON, _NO_STORE, (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode("ascii"))]
    if error.challenge:
        headers.append((b"www-authenticate", challenge(error, resource).encode("ascii")))
    headers += error.extra_headers()
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _trace_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The W3C trace id of a valid inbound ``traceparent``: it becomes the request id too, so
    logs and audit records join the caller's trace (otherwise the request id is random)."""
    for name, value in headers:
        if name == b"traceparent":
            match = _TRACEPARENT.match(value)
            if match and match.group(1) != b"0" * 32 and match.group(2) != b"0" * 16:
                return match.group(1).decode("ascii")
            break
    return None


def _client_cert(extensions: dict[str, Any]) -> bytes | None:
    """The DER of the verified client certificate, from the ASGI TLS extension that
    ``tlsserver.ClientCertProtocol`` adds (uvicorn itself adds none)."""
    tls = extensions.get("tls")
    chain = tls.get("client_cert_chain") if tls else None
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


def _request_info(scope: Scope) -> RequestInfo:
    client = scope.get("client")
    trace_id = _trace_id(scope["headers"])
    extensions = scope.get("extensions")
    return RequestInfo(
        method=scope["method"],
        raw_path=scope.get("raw_path") or scope["path"].encode("utf-8"),
        query_string=scope.get("query_string", b""),
        headers=tuple(scope["headers"]),
        scheme=scope.get("scheme", "http"),
        client=client[0] if client else None,
        request_id=trace_id or os.urandom(16).hex(),
        trace_id=trace_id,
        client_cert=_client_cert(extensions) if extensions else None,
    )


def _body_reader(request: RequestInfo, receive: Receive):  # type: ignore[no-untyped-def]
    """``read(limit)``: the whole request body, or ``BodyTooLarge`` past ``limit`` bytes."""

    async def read(limit: int) -> bytes:
        declared = request.header(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        body = bytearray()
        async for chunk in request_chunks(receive):
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge(f"the body is larger than {limit} bytes")
        return bytes(body)

    return read
